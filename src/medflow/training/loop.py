"""The training loop: data held on the device, batches by index slicing, no host sync inside an epoch.

Loss and accuracy accumulate on the device and are read once per epoch; early stopping keeps the weights
of the epoch with the lowest validation loss.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FitConfig:
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    seed: int
    device: str = "cpu"
    class_weights: list[float] | None = None
    deterministic: bool = True


@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, batch: int) -> tuple[float, float]:
    model.eval()
    total = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch]).float()
        total += loss_fn(logits, y[i : i + batch]) * len(logits)
        correct += (logits.argmax(1) == y[i : i + batch]).sum()
    loss, acc = (torch.stack([total, correct]) / max(len(x), 1)).tolist()
    return loss, acc


def fit(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    cfg: FitConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    device = torch.device(cfg.device)
    model.to(device)
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    # Unweighted validation loss: early stopping should track calibration on the real class mix.
    val_loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16

    best_state, best_loss, best_epoch, stale = None, float("inf"), 0, 0
    history: list[dict[str, float]] = []
    n = len(x_train)
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                logits = model(xb)
                loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        train_loss, train_acc = (torch.stack([total, correct]) / n).tolist()
        val_loss, val_acc = evaluate_loss(model, x_val, y_val, val_loss_fn, max(cfg.batch_size, 1024))
        seconds = time.perf_counter() - t0
        row = {
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "rows_per_s": n / seconds if seconds > 0 else 0.0,
        }
        history.append(row)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if on_epoch:
            on_epoch(epoch, row)
        if stale >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch=best_epoch, best_val_loss=best_loss, epochs_run=epoch, history=history)
