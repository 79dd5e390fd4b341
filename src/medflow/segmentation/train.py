"""train for segmentation: MONAI's U-Net on patches, Dice + cross-entropy (DiceCELoss), validated each epoch by
sliding windows over whole validation cases (val_dice, MONAI's DiceMetric without background: higher is better).

Its own small loop rather than training/loop.fit: fit takes every example as one tensor held in memory and scores a
batch at a time, while this loop draws patches from memory-mapped cases each epoch and scores whole cases. It reuses
the loop's pieces: the device choice, seeding, atomic checkpoints under a fingerprint, the MLflow run and its epoch
log. Patches: MONAI's RandCropByPosNegLabel, half centred on foreground; random flips of each axis on the device;
bf16 autocast on CUDA. `medflow tune` trains each trial of a U-Net with the same loop (fit_unet).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from medflow import tracking
from medflow.console import say
from medflow.data.columns import CONTENT_HASH, ROW_ID
from medflow.imaging import network
from medflow.imaging.geometry import ORIENTATION, fit_window, windowed
from medflow.params import Params, TrainParams
from medflow.paths import Paths
from medflow.segmentation.cases import load_case, schema_of
from medflow.training import checkpoint
from medflow.training.loop import pick_device, seed_everything

WINDOW_SAMPLE = 200_000  # voxels per training case the intensity window is fitted on


def cpu_threads(p) -> int:
    """train.threads, else OMP_NUM_THREADS when set, else every core: a U-Net's convolutions share out as the conv
    nets' do (training.settings.cpu_threads)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return p.threads or (int(env) if env.isdigit() else len(os.sched_getaffinity(0)))


def split_rows(paths: Paths, name: str) -> list[int]:
    manifest = pd.read_csv(paths.manifest)
    return manifest.loc[manifest["split"] == name, "row_id"].astype(int).tolist()


def _sample(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = image.reshape(-1)
    return np.asarray(flat[np.sort(rng.choice(len(flat), min(WINDOW_SAMPLE, len(flat)), replace=False))])


def patches(image: np.ndarray, mask: np.ndarray, size: list[int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n (image, mask) patches of one case, half centred on foreground voxels (MONAI's RandCropByPosNegLabel); a
    case smaller than a patch is padded first."""
    from monai.transforms import RandCropByPosNegLabel, SpatialPad

    pad = SpatialPad(size)
    image, mask = pad(np.array(image)[None]), pad(np.array(mask)[None])  # copies: the cache is read-only
    crop = RandCropByPosNegLabel(size, pos=1, neg=1, num_samples=n, allow_smaller=False)
    crop.set_random_state(seed)
    # One draw of centres serves both: the same RandomState state before each call.
    xs = crop(image, label=mask, randomize=True)
    ys = crop(mask, label=mask, randomize=False)
    return np.stack([np.asarray(x) for x in xs]), np.stack([np.asarray(y) for y in ys])


def flip(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch flipped along each spatial axis with probability 1/2, on the device."""
    for axis in range(2, x.ndim):
        chosen = (torch.rand(len(x), generator=gen) < 0.5).to(x.device).view(-1, *([1] * (x.ndim - 1)))
        x, y = torch.where(chosen, x.flip(axis), x), torch.where(chosen, y.flip(axis), y)
    return x, y


def check(t: TrainParams, dims: int) -> None:
    if len(t.patch_size) != dims:
        raise ValueError(f"train.patch_size has {len(t.patch_size)} sizes for {dims}-D cases; give {dims}")
    if len(t.unet_strides) != len(t.unet_channels) - 1:
        raise ValueError("train.unet_strides: one stride between each two levels of train.unet_channels")
    step = int(np.prod(t.unet_strides))
    if any(s % step for s in t.patch_size):
        raise ValueError(f"train.patch_size: each size a multiple of {step}, the product of train.unet_strides")


@torch.no_grad()
def validate_cases(model, cases, patch, device, loss_fn, labels: int) -> tuple[float, float]:
    """Mean Dice+CE loss and mean foreground Dice over whole validation cases (sliding windows)."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    model.eval()
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    losses = []
    for image, mask in cases:
        logits = network.infer(model, image, patch, device)[None]
        truth = torch.from_numpy(np.asarray(mask, dtype=np.int64))[None, None]
        losses.append(float(loss_fn(logits, truth)))
        metric(one_hot(logits.argmax(1, keepdim=True), labels), one_hot(truth, labels))
    return float(np.mean(losses)), float(metric.aggregate().item())


@dataclass
class Fitted:
    model: torch.nn.Module  # the best epoch's weights, on the CPU
    config: dict  # network.config_of: what the bundle's model.json keeps
    window: tuple[float, float]
    history: list[dict[str, float]]  # per epoch: train_loss, val_loss, val_dice
    best_dice: float
    best_epoch: int
    resumed_from: int
    patches_per_s: float

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def run(params: Params, paths: Paths, tuned: str | None = None) -> dict:
    """The train step. tuned: the step's line on params.tuned.yaml's values (medflow.tuning.tuned.note), if any."""
    p = params.train
    device = pick_device(p.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(p))
    dims = json.loads(paths.summary("validate").read_text())["dims"]
    check(p, dims)
    train_rows, val_rows = split_rows(paths, "train"), split_rows(paths, "val")
    for name, rows in (("train", train_rows), ("val", val_rows)):
        if not rows:
            raise ValueError(f"{paths.manifest}: the {name} split is empty; enlarge the data or split.{name}")
    tracking.configure(paths)
    opened = tracking.open_run(params, paths)
    run_id = opened.run_id
    paths.training_run.parent.mkdir(parents=True, exist_ok=True)
    paths.training_run.write_text(run_id)
    if tuned:
        say(f"train: {tuned}")
        tracking.set_tags(run_id, {"medflow.tuned": tuned})

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        tracking.log_epoch(run_id, row, step=epoch)
        say(
            f"epoch {epoch}/{p.max_epochs}: train_loss {row['train_loss']:.4f}, val_loss {row['val_loss']:.4f}, "
            f"val_dice {row['val_dice']:.4f}"
        )

    try:
        fitted = fit_unet(params, paths, device, dims, train_rows, val_rows, on_epoch, resumable=True)
        pre = _preprocessing(params, paths, fitted, dims)
        network.save(paths.model_bundle, fitted.model, fitted.config, pre, schema_of(params))
        paths.checkpoint.unlink(missing_ok=True)  # only once the bundle is whole: a kill before resumes the training
        tracking.log_metrics(
            run_id,
            {"best_epoch": fitted.best_epoch, "best_val_dice": fitted.best_dice, "patches_per_s": fitted.patches_per_s},
        )
    except BaseException as exc:
        tracking.end_run(run_id, "FAILED" if isinstance(exc, Exception) else "KILLED")
        paths.training_run.unlink(missing_ok=True)
        raise
    tracking.end_run(run_id)
    paths.training_run.unlink(missing_ok=True)
    summary = {
        "run_id": run_id,
        "device": str(device),
        "world_size": 1,
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "resumed_from": fitted.resumed_from,
        "best_val_loss": round(min(h["val_loss"] for h in fitted.history), 6),
        "best_val_dice": round(fitted.best_dice, 6),
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "patches_per_s": round(fitted.patches_per_s, 1),
        "window": list(fitted.window),
    }
    paths.train_run.write_text(json.dumps({"run_id": run_id}) + "\n")
    paths.summary("train").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _preprocessing(params: Params, paths: Paths, fitted: Fitted, dims: int) -> dict:
    return {
        "window": list(fitted.window),
        "spacing": json.loads(paths.summary("validate").read_text())["spacing"],
        "orientation": ORIENTATION[:dims],
        "image_column": params.data.image_column,
    }


def fit_unet(
    params: Params,
    paths: Paths,
    device: torch.device,
    dims: int,
    train_rows: list[int],
    val_rows: list[int],
    on_epoch: Callable[[int, dict[str, float]], None],
    resumable: bool,
) -> Fitted:
    """Trains the U-Net of params.train on patches of the train cases, scoring the val cases each epoch; on_epoch
    gets each epoch's row (the train step logs it, a `medflow tune` trial reports it and may raise TrialPruned).
    resumable: checkpoints at paths.checkpoint and resumes from it, the train step's alone (a trial is cheap to redo,
    and must not take over the train step's checkpoint); the caller deletes it once the model is saved."""
    from monai.losses import DiceCELoss

    p = params.train
    seed_everything(params.seed, p.deterministic)
    rng = np.random.default_rng(params.seed)
    window = (
        tuple(params.data.window)
        if params.data.window
        else fit_window([_sample(load_case(paths, r)[0], rng) for r in train_rows])
    )
    val_cases = [(windowed(load_case(paths, r)[0], window), load_case(paths, r)[1]) for r in val_rows]
    config = network.config_of(params, dims)
    model = network.build(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    gen = torch.Generator().manual_seed(params.seed)
    use_amp = p.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    labels = len(params.data.labels)

    ckpt = paths.checkpoint
    fingerprint = _fingerprint(params, paths, window) if resumable else None
    state = checkpoint.load(ckpt, fingerprint) if resumable and p.resume else None
    start, best, best_epoch, history, best_weights, stale = 0, -1.0, 0, [], None, 0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"], gen)
        rng.bit_generator.state = state["numpy"]
        start, best, best_epoch, history, stale = (
            state[k] for k in ("epoch", "best", "best_epoch", "history", "stale")
        )
        best_weights = state["best_weights"]
        say(f"train: resumed from epoch {start} ({ckpt.name})")
    resumed_from = start
    started = time.perf_counter()
    seen = 0
    for epoch in range(start + 1, p.max_epochs + 1):
        model.train()
        xs, ys = [], []
        for r in rng.permutation(train_rows):
            image, mask = load_case(paths, int(r))
            x, y = patches(windowed(image, window), mask, p.patch_size, p.patches_per_case, int(rng.integers(2**31)))
            xs.append(x)
            ys.append(y)
        x_all, y_all = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys).astype(np.int64))
        order = torch.randperm(len(x_all), generator=gen)
        losses = []
        for i in range(0, len(order), p.batch_size):
            idx = order[i : i + p.batch_size]
            xb, yb = flip(x_all[idx].to(device), y_all[idx].to(device), gen)
            with torch.autocast(device.type, enabled=use_amp, dtype=amp_dtype):
                loss = loss_fn(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        seen += len(order)
        val_loss, val_dice = validate_cases(model, val_cases, p.patch_size, device, loss_fn, labels)
        row = {"train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_dice": val_dice}
        history.append(row)
        if val_dice > best:
            best, best_epoch, stale = val_dice, epoch, 0
            best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        on_epoch(epoch, row)
        if resumable and epoch % p.checkpoint_every == 0:
            state = {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": checkpoint.rng_state(gen),
                "numpy": rng.bit_generator.state,
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "history": history,
                "stale": stale,
                "best_weights": best_weights,
            }
            checkpoint.save(ckpt, state)
        if stale >= p.patience:
            say(f"stopped early after epoch {epoch}: no better val_dice since epoch {best_epoch}")
            break
    elapsed = time.perf_counter() - started
    model.load_state_dict(best_weights)
    model.cpu()
    return Fitted(model, config, window, history, best, best_epoch, resumed_from, seen / elapsed)


def _fingerprint(params: Params, paths: Paths, window: tuple[float, float]) -> str:
    """What a checkpoint was trained on: the train settings, seed, window and every case's content hash."""
    cleaned = pd.read_parquet(paths.cleaned)
    data = cleaned[[ROW_ID, CONTENT_HASH]].to_numpy().tolist()
    key = json.dumps(
        {"train": params.train.model_dump(mode="json"), "seed": params.seed, "window": window, "data": data},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()
