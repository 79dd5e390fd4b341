"""One flat training loop for tables and images, in the airbench style.

Data is held on the device when it fits and batches are gathered along slices of a permutation there (data.py);
augmentation runs batched on the device; mixed precision (bf16, else fp16 with a grad scaler) and
channels_last on CUDA; torch.compile on request. Nothing in the step loop waits for the device: loss and
accuracy accumulate on it and are read once per epoch. Early stopping keeps the weights of the epoch with the
lowest validation loss. The whole state is written (checkpoint.py) after the first epoch, then at most every
`checkpoint_interval_s` seconds (on an epoch that is a multiple of `checkpoint_every`), and after the last epoch, so
a killed run restarted with `resume` ends with exactly the weights of an uninterrupted one, having redone at most
an interval of work. Under torchrun the
same loop runs DistributedDataParallel (distributed.py): each rank takes its shard of every epoch's
permutation, metrics are all-reduced once per epoch, and only rank 0 reports and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medflow.console import say
from medflow.data.image_store import StoreRows, rows_within
from medflow.tasks import named
from medflow.training import augment, checkpoint, distributed
from medflow.training.data import Split, StreamedSplit, fits


@dataclass(frozen=True)
class FitConfig:
    lr: float  # AdamW learning rate, or SGD's
    weight_decay: float
    batch_size: int  # rows per optimizer step, summed over all ranks
    max_epochs: int
    patience: int  # epochs without a lower validation loss before stopping
    seed: int
    device: str = "cpu"
    class_weights: list[float] | None = None  # per class, for the training loss only
    optimizer: str = "adamw"  # adamw | sgd (nesterov when momentum > 0)
    momentum: float = 0.9
    label_smoothing: float = 0.0
    # Images (uint8 NHWC inputs): the training split's per-channel pixel mean/std on the 0-255 scale.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment_flip: bool = False
    augment_translate: int = 0  # pixels
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    stream: bool | None = None  # None: stream from host memory only when the data does not fit on the device
    # Images given as StoreRows (on disk): MB of pixels held at once while streaming them (training/data.py).
    memory_budget_mb: float | None = None
    checkpoint: Path | None = None  # None: no checkpoints
    checkpoint_every: int = 1  # epochs
    # Seconds between checkpoints (0: every checkpoint_every epochs). A full-state save per epoch of a small
    # model costs more than the epoch.
    checkpoint_interval_s: float = 0.0
    resume: bool = True
    mixup: float = 0.0  # Beta alpha of mixup (augment.py); 0: off
    cutmix: float = 0.0  # Beta alpha of cutmix, images only; 0: off
    task: str = "classification"  # data.task (medflow.tasks): the loss and the epoch's score are the task's
    loss: str = "mse"  # regression: mse | huber
    # Regression: the training split's target standard deviation, which takes the epoch's MAE from the standardised
    # scale the network learns on back to the target's units.
    metric_scale: float = 1.0


@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0  # the epoch of the checkpoint this run continued from; 0 for a fresh run


def clock_text(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """Training progress a person can follow: epoch n/N, elapsed, ETA (at max_epochs) and throughput.

    On a terminal, a live tqdm bar. On a pipe or a log, a line when `every_s` seconds have passed since the last
    one or every `every_k` epochs (default: a tenth of the epochs), and always for the first and the last epoch,
    the best epoch so far marked with `*`: a log of a 200-epoch run reads in a dozen lines, not 200.
    Fed with what the loop already read once per epoch: it adds no device sync.
    """

    def __init__(
        self,
        total: int,
        unit: str = "rows/s",
        stream: TextIO | None = None,
        every_s: float = 10.0,
        every_k: int | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.unit, self.every_s, self.clock = total, unit, every_s, clock
        self.stream = stream or sys.stdout
        self.every_k = every_k or max(1, math.ceil(total / 10))
        self.live = self.stream.isatty() if live is None else live
        self.bar = None
        self.first = self.last_shown = self.t0 = self.last_t = 0.0

    def start(self, resumed_from: int = 0) -> None:
        self.first, self.last_shown = resumed_from, resumed_from
        self.t0 = self.last_t = self.clock()
        if self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=resumed_from, unit="epoch", file=self.stream, dynamic_ncols=True)

    def line(self, epoch: int, row: dict[str, float], best_epoch: int) -> str:
        elapsed = self.clock() - self.t0
        done = epoch - self.first
        eta = elapsed / done * (self.total - epoch) if done else 0.0
        best = " *best" if epoch == best_epoch else f" (best {best_epoch})"
        score = next(k for k in row if k.startswith("val_") and k != "val_loss")  # the task's: val_accuracy, val_mae
        return (
            f"epoch {epoch}/{self.total}  elapsed {clock_text(elapsed)}  eta {clock_text(eta)}  "
            f"train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}{best}  "
            f"{'val_acc' if score == 'val_accuracy' else score} {row[score]:.4f}  {row['rows_per_s']:,.0f} {self.unit}"
        )

    def update(self, epoch: int, row: dict[str, float], best_epoch: int) -> None:
        if self.bar is not None:
            self.bar.update(epoch - self.bar.n)
            self.bar.set_postfix_str(
                f"val_loss {row['val_loss']:.4f} best@{best_epoch} {row['rows_per_s']:,.0f} {self.unit}", refresh=True
            )
            return
        now = self.clock()
        if epoch == self.first + 1 or epoch % self.every_k == 0 or now - self.last_t >= self.every_s:
            self.show(epoch, row, best_epoch)

    def show(self, epoch: int, row: dict[str, float], best_epoch: int) -> None:
        print(self.line(epoch, row, best_epoch), file=self.stream, flush=True)
        self.last_shown, self.last_t = epoch, self.clock()

    def close(self, epoch: int, row: dict[str, float] | None, best_epoch: int, stopped_early: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if row is not None and (self.live or self.last_shown != epoch):
            self.show(epoch, row, best_epoch)
        if stopped_early:
            print(f"stopped early after epoch {epoch}: no better val_loss since epoch {best_epoch}", file=self.stream)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS is reproducible only with a fixed workspace; it reads this when first used.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # Autotuned convolution kernels are fastest but chosen by timing, so they may differ between runs.
    torch.backends.cudnn.benchmark = not deterministic


@torch.no_grad()
def evaluate(model: nn.Module, data: Split, batch: int, autocast: Callable, cfg: FitConfig) -> torch.Tensor:
    """[summed loss, summed score] over data, on the device: the task's (tasks/), for classification the unweighted
    cross-entropy (early stopping tracks the real class mix) and the rows classified right."""
    task = named(cfg.task)
    model.eval()
    sums = torch.zeros(2, device=data.device)
    for rows in data.in_order(batch):
        xb, yb = data.batch(rows)
        with autocast():
            out = model(xb).float()
        sums += torch.stack([task.loss_sum(cfg, out, yb), task.epoch_score(out, yb)])
    return sums


def make_optimizer(model: nn.Module, cfg: FitConfig, fused: bool | None) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
            fused=fused,
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: adamw, sgd")


def fit(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    cfg: FitConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Trains model in place on float [N, F] rows or uint8 [N, H, W, C] images; returns with the best weights.

    on_epoch(epoch, metrics) runs on rank 0 after each epoch, after that epoch's checkpoint is written; progress
    (rank 0's) is shown after it.
    """
    device = torch.device(cfg.device)
    rank, world = distributed.rank_world()
    streamed = isinstance(x_train, StoreRows)
    images = streamed or x_train.dtype == torch.uint8
    if images and (cfg.mean is None or cfg.std is None):
        raise ValueError("uint8 images need cfg.mean and cfg.std (the training split's ImageNormaliser)")
    fmt = torch.channels_last if images and cfg.channels_last and device.type == "cuda" else torch.contiguous_format
    fingerprint = ""
    if cfg.checkpoint:
        # Images on disk are fingerprinted by the store's digest and the rows taken, not read into memory.
        data = (x_train, y_train, x_val, y_val)
        if streamed:
            data = (*_store_tensors(x_train), y_train, *_store_tensors(x_val), y_val)
        fingerprint = checkpoint.fingerprint(cfg, model, world, data)
    model.to(device, memory_format=fmt)

    nbytes = sum(t.nbytes for t in (x_train, y_train, x_val, y_val))
    stream = streamed or (not fits(device, nbytes) if cfg.stream is None else cfg.stream)
    home = torch.device("cpu") if stream else device
    nhwc = fmt == torch.channels_last
    norm = {}
    if images:
        norm = {
            "mean": torch.tensor(cfg.mean, device=device).view(1, -1, 1, 1),
            "std": torch.tensor(cfg.std, device=device).view(1, -1, 1, 1),
            "nhwc": nhwc,
        }

    def place(x: torch.Tensor) -> torch.Tensor:
        # Images are stored in the layout the model runs in, so that no batch pays for a transposing copy:
        # NHWC as given for channels_last, else NCHW once.
        return x.to(home).permute(0, 3, 1, 2).contiguous() if images and not nhwc else x.to(home)

    if streamed:
        if world > 1:
            raise ValueError("train.memory_budget_mb: streaming images from disk does not yet run under torchrun")
        # A fifth of the budget per window: two are held at once (training/data.py), and the batches in flight.
        window = rows_within(cfg.memory_budget_mb, x_train.store.row_bytes, parts=5)
        blocks = {"block_rows": max(1, window // 16), "window_blocks": 16}
        train = StreamedSplit(x_train, y_train, device, **norm, **blocks)
        val = StreamedSplit(x_val, y_val, device, **norm, **blocks)
    else:
        train = Split(place(x_train), y_train.to(home), device, **norm)
        # Each rank scores its own slice of the validation set; the sums are all-reduced.
        val = Split(place(x_val[rank::world]), y_val[rank::world].to(home), device, **norm)

    task = named(cfg.task)
    loss_fn = task.loss(cfg, device)
    # Fused on CUDA and CPU: one kernel per parameter for the whole update instead of ~10 (a fifth of a small
    # MLP's epoch on the CPU). None elsewhere: torch's default (False would force its slowest for-loop version).
    opt = make_optimizer(model, cfg, fused=True if device.type in ("cuda", "cpu") else None)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if not use_amp or torch.cuda.is_bf16_supported() else torch.float16
    # A disabled torch.autocast still costs its enter and exit on every batch.
    autocast = functools.partial(torch.autocast, device.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext
    # fp16 needs loss scaling against underflow, and the scaler reads an inf flag per step (a host sync);
    # bf16 has float32's range and needs neither.
    scaled = use_amp and amp_dtype == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=scaled)
    # One data order for all ranks (each takes a shard of it), drawn on the CPU so that it is the same on every
    # device and in both data paths (one small copy an epoch); augmentation draws differ per rank.
    order_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + rank)

    epoch, stale, best_epoch, best_loss, best_state, history, resumed_from = 0, 0, 0, math.inf, None, [], 0
    saved = checkpoint.load(cfg.checkpoint, fingerprint) if cfg.checkpoint and cfg.resume and rank == 0 else None
    saved = distributed.broadcast(saved)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        checkpoint.set_rng_state(saved["rng"][rank], order_gen, aug_gen)
        epoch, stale, best_epoch, best_loss = saved["epoch"], saved["stale"], saved["best_epoch"], saved["best_loss"]
        best_state = {k: v.to(device) for k, v in saved["best_state"].items()} if saved["best_state"] else None
        history, resumed_from = saved["history"], saved["epoch"]
        if rank == 0:
            say(f"{cfg.checkpoint}: resuming after epoch {epoch}")

    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    n = len(train)
    per_rank, batch = n // world, max(1, cfg.batch_size // world)  # world * batch rows per optimizer step
    n_seen, n_val = per_rank * world, max(len(x_val), 1)
    eval_batch = 2 * cfg.batch_size if images else max(cfg.batch_size, 1024)
    # A task whose loss needs something of each batch deals its own (survival: an event in each); its loss and
    # score compare rows with one another, so the validation split is scored whole, never summed over batches.
    deal = getattr(task, "batches", None)
    if deal is not None:
        if world > 1:
            raise ValueError(f"data.task={cfg.task}: not yet under torchrun (its batches differ in size by rank)")
        eval_batch = n_val
    if rank != 0:
        progress = None
    if progress:
        progress.start(resumed_from)
    # A fresh run checkpoints its first epoch (a watcher sees training under way); a resumed one has one already.
    last_saved = time.monotonic() if resumed_from else -math.inf

    while epoch < cfg.max_epochs and stale < cfg.patience:
        epoch += 1
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        if streamed:
            batches = train.epoch(order_gen, cfg.seed, epoch, batch)
        else:
            order = torch.randperm(n, generator=order_gen)[rank:n_seen:world].to(home)
            batches = (order[i : i + batch] for i in range(0, per_rank, batch))
        outs: list[tuple[torch.Tensor, torch.Tensor]] = []  # a dealing task's batch outputs, kept on the device
        if deal is not None:
            batches = deal(order, y_train, batch, cfg.seed + epoch)
        for i, rows in enumerate(batches):
            xb, yb = train.batch(rows, cfg.augment_flip, cfg.augment_translate, aug_gen)
            mixed = None
            if cfg.mixup > 0 or cfg.cutmix > 0:
                rng = augment.batch_rng(cfg.seed, rank, epoch, i * batch)
                mixed = augment.mix(xb, yb, cfg.mixup, cfg.cutmix, rng, aug_gen)
            with autocast():
                logits = net(xb if mixed is None else mixed.x)
            loss = loss_fn(logits.float(), yb) if mixed is None else mixed.loss(loss_fn, logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            if scaled:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:  # a disabled scaler's three calls per step are pure overhead for a small model
                loss.backward()
                opt.step()
            loss_sum.add_(loss.detach(), alpha=len(yb))
            if deal is None:
                correct.add_(task.epoch_score(logits.detach().float(), yb))
            else:  # scored once per epoch, below: per batch it would copy to the host at every step
                outs.append((logits.detach().float(), yb))
        if outs:
            correct.add_(task.epoch_score(torch.cat([o for o, _ in outs]), torch.cat([y for _, y in outs])))
        # Rank 0's clock decides when to checkpoint; its vote rides in the epoch's one all-reduce, so all ranks agree.
        due = rank == 0 and time.monotonic() - last_saved >= cfg.checkpoint_interval_s
        sums = torch.cat(
            [
                torch.stack([loss_sum, correct]),
                evaluate(model, val, eval_batch, autocast, cfg),
                torch.tensor([float(due)], device=device),
            ]
        )
        train_loss, train_correct, val_loss, val_correct, due = distributed.all_reduce(sums).tolist()  # the one sync
        seconds = time.perf_counter() - t0
        score = task.epoch_metric
        row = {
            "train_loss": train_loss / n_seen,
            f"train_{score}": train_correct / n_seen * cfg.metric_scale,
            "val_loss": val_loss / n_val,
            f"val_{score}": val_correct / n_val * cfg.metric_scale,
            "rows_per_s": n_seen / seconds if seconds > 0 else 0.0,
        }
        history.append(row)
        if row["val_loss"] < best_loss - 1e-6:
            best_loss, best_epoch, stale = row["val_loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        last = epoch >= cfg.max_epochs or stale >= cfg.patience
        if cfg.checkpoint and (last or (due and epoch % cfg.checkpoint_every == 0)):
            last_saved = time.monotonic()
            rng = distributed.gather(checkpoint.rng_state(order_gen, aug_gen))  # every rank's streams
            if rank == 0:
                checkpoint.save(
                    cfg.checkpoint,
                    {
                        "fingerprint": fingerprint,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": rng,
                        "stale": stale,
                        "best_epoch": best_epoch,
                        "best_loss": best_loss,
                        "best_state": best_state,
                        "history": history,
                    },
                )
        if on_epoch and rank == 0:
            on_epoch(epoch, row)
        if progress:
            progress.update(epoch, row, best_epoch)
    if progress:
        progress.close(epoch, history[-1] if history else None, best_epoch, stale >= cfg.patience)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch, best_loss, epoch, history, resumed_from)


def _store_tensors(rows: StoreRows) -> tuple[torch.Tensor, torch.Tensor]:
    """What a checkpoint's fingerprint hashes of images on disk: the store's digest and which rows of it."""
    digest = torch.frombuffer(bytearray.fromhex(rows.store.digest()), dtype=torch.uint8)
    return digest, torch.from_numpy(rows.rows)
