"""train for segmentation: MONAI's U-Net on patches, Dice + cross-entropy (DiceCELoss), validated each epoch by
sliding windows over whole validation cases (val_dice, MONAI's DiceMetric without background: higher is better).

Its own small loop rather than training/loop.fit: fit takes every example as one tensor held in memory and scores a
batch at a time, while this loop draws patches from memory-mapped cases each epoch and scores whole cases. It reuses
the loop's pieces: the device choice, seeding, atomic checkpoints under a fingerprint, the MLflow run and its epoch
log. Patches: MONAI's RandCropByPosNegLabel, half centred on foreground; random flips of each axis on the device;
bf16 autocast on CUDA. `medflow tune` trains each trial of a U-Net with the same loop (fit_unet), in one process.

Under torchrun (training/distributed.py) the U-Net runs DistributedDataParallel: every rank draws its share of the
epoch's patches, with crops seeded by the seed and its rank, in batches of train.batch_size / world; each scores its
slice of the validation cases, and the sums are all-reduced; rank 0 alone prints, logs, checkpoints and writes.
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
from medflow.training import checkpoint, distributed
from medflow.training.loop import pick_device, seed_everything

WINDOW_SAMPLE = 200_000  # voxels per training case the intensity window is fitted on


def cpu_threads(p, world: int = 1) -> int:
    """train.threads, else OMP_NUM_THREADS when set, else the cores shared among the ranks: a U-Net's convolutions
    share out as the conv nets' do (training.settings.cpu_threads)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return p.threads or (int(env) if env.isdigit() else max(1, len(os.sched_getaffinity(0)) // world))


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


def draws(cases: int, per_case: int, rank: int, world: int) -> list[int]:
    """How many patches of each of the epoch's cases this rank draws: the epoch's cases x per_case patches dealt out
    in turn, the remainder short of a whole round dropped (as the tabular loop drops rows), so that every rank takes
    as many optimizer steps as the others."""
    dealt = cases * per_case // world * world
    return [len(range(i * per_case + rank, min((i + 1) * per_case, dealt), world)) for i in range(cases)]


@torch.no_grad()
def validate_cases(model, cases, patch, device, loss_fn, labels: int) -> torch.Tensor:
    """[summed Dice+CE loss, summed foreground Dice, cases] over whole validation cases (sliding windows): sums, so
    that the ranks' slices add up to the whole set's means."""
    # compute_dice, not DiceMetric: under torchrun DiceMetric's buffer gathers every rank's cases by itself.
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    model.eval()
    losses, dice = [], []
    for image, mask in cases:
        logits = network.infer(model, image, patch, device)[None]
        truth = torch.from_numpy(np.asarray(mask, dtype=np.int64))[None, None]
        losses.append(float(loss_fn(logits, truth)))
        pred = one_hot(logits.argmax(1, keepdim=True), labels)
        dice.append(
            float(compute_dice(pred, one_hot(truth, labels), include_background=False, ignore_empty=False).mean())
        )
    return torch.tensor([sum(losses), sum(dice), len(cases)], dtype=torch.float64)


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
    # Before anything is read or written: under torchrun every rank must join the group first.
    device = distributed.setup(pick_device(p.device))
    try:
        return _train(params, paths, device, tuned)
    finally:
        distributed.teardown()


def _train(params: Params, paths: Paths, device: torch.device, tuned: str | None) -> dict:
    p = params.train
    rank, world = distributed.rank_world()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(p, world))
    dims = json.loads(paths.summary("validate").read_text())["dims"]
    check(p, dims)
    train_rows, val_rows = split_rows(paths, "train"), split_rows(paths, "val")
    for name, rows in (("train", train_rows), ("val", val_rows)):
        if not rows:
            raise ValueError(f"{paths.manifest}: the {name} split is empty; enlarge the data or split.{name}")
    if len(train_rows) * p.patches_per_case < world:
        raise ValueError(f"train.patches_per_case: {len(train_rows)} train cases give a rank of {world} no patch")
    if rank != 0:
        fitted = fit_unet(params, paths, device, dims, train_rows, val_rows, None, resumable=True)
        return {"run_id": None, "world_size": world, "best_val_dice": round(fitted.best_dice, 6)}
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
        "world_size": world,
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
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    resumable: bool,
) -> Fitted:
    """Trains the U-Net of params.train on patches of the train cases, scoring the val cases each epoch; on_epoch
    gets each epoch's row on rank 0 (the train step logs it, a `medflow tune` trial reports it and may raise
    TrialPruned). resumable: checkpoints at paths.checkpoint and resumes from it, the train step's alone (a trial is
    cheap to redo, and must not take over the train step's checkpoint); the caller deletes it once the model is
    saved. Under torchrun every rank calls it, and all return the same weights."""
    from monai.losses import DiceCELoss
    from torch.nn.parallel import DistributedDataParallel

    p = params.train
    rank, world = distributed.rank_world()
    seed_everything(params.seed, p.deterministic)
    # The same stream on every rank (the window, the epoch's case order, each case's crop seeds): only the crops
    # drawn with a rank's own seed differ, and one rank's state is every rank's in a checkpoint.
    rng = np.random.default_rng(params.seed)
    window = (
        tuple(params.data.window)
        if params.data.window
        else fit_window([_sample(load_case(paths, r)[0], rng) for r in train_rows])
    )
    val_cases = [(windowed(load_case(paths, r)[0], window), load_case(paths, r)[1]) for r in val_rows[rank::world]]
    config = network.config_of(params, dims)
    model = network.build(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    # The batch order and the flips: each rank's own.
    gen = torch.Generator().manual_seed(params.seed + rank)
    use_amp = p.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    labels = len(params.data.labels)

    ckpt = paths.checkpoint
    fingerprint = _fingerprint(params, paths, window, world) if resumable else None
    state = checkpoint.load(ckpt, fingerprint) if resumable and p.resume and rank == 0 else None
    state = distributed.broadcast(state)  # other nodes need not see rank 0's disk
    start, best, best_epoch, history, best_weights, stale = 0, -1.0, 0, [], None, 0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"][rank], gen)
        rng.bit_generator.state = state["numpy"]
        start, best, best_epoch, history, stale = (
            state[k] for k in ("epoch", "best", "best_epoch", "history", "stale")
        )
        best_weights = state["best_weights"]
        if rank == 0:
            say(f"train: resumed from epoch {start} ({ckpt.name})")
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batch = max(1, p.batch_size // world)  # world * batch patches per optimizer step, as one process's batch_size
    resumed_from = start
    started = time.perf_counter()
    seen = 0
    for epoch in range(start + 1, p.max_epochs + 1):
        net.train()
        xs, ys = [], []
        cases = rng.permutation(train_rows)
        for r, n in zip(cases, draws(len(cases), p.patches_per_case, rank, world), strict=True):
            seeds = rng.integers(2**31, size=world)  # drawn whole on every rank: the stream stays the same on all
            if not n:
                continue
            image, mask = load_case(paths, int(r))
            x, y = patches(windowed(image, window), mask, p.patch_size, n, int(seeds[rank]))
            xs.append(x)
            ys.append(y)
        x_all, y_all = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys).astype(np.int64))
        order = torch.randperm(len(x_all), generator=gen)
        # Summed on the device: a float() per step would wait for the GPU at every step.
        loss_total = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            xb, yb = flip(x_all[idx].to(device), y_all[idx].to(device), gen)
            with torch.autocast(device.type, enabled=use_amp, dtype=amp_dtype):
                loss = loss_fn(net(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_total += loss.detach()
        seen += len(order) * world
        sums = validate_cases(model, val_cases, p.patch_size, device, loss_fn, labels)
        steps = -(-len(order) // batch)
        # On the device: NCCL reduces CUDA tensors only.
        sums = torch.cat([sums.to(device), (loss_total / steps)[None]])
        loss_sum, dice_sum, n_val, train_loss = distributed.all_reduce(sums).tolist()
        row = {"train_loss": train_loss / world, "val_loss": loss_sum / n_val, "val_dice": dice_sum / n_val}
        history.append(row)
        # Every rank holds the same all-reduced sums, so each decides alike: they keep the same epoch, stop together.
        if row["val_dice"] > best:
            best, best_epoch, stale = row["val_dice"], epoch, 0
            best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if on_epoch and rank == 0:
            on_epoch(epoch, row)
        if resumable and epoch % p.checkpoint_every == 0:
            gens = distributed.gather(checkpoint.rng_state(gen))  # every rank's stream
            if rank == 0:
                state = {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": gens,
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
            if rank == 0:
                say(f"stopped early after epoch {epoch}: no better val_dice since epoch {best_epoch}")
            break
    elapsed = time.perf_counter() - started
    model.load_state_dict(best_weights)
    model.cpu()
    return Fitted(model, config, window, history, best, best_epoch, resumed_from, seen / elapsed)


def _fingerprint(params: Params, paths: Paths, window: tuple[float, float], world: int) -> str:
    """What a checkpoint was trained on: the train settings, seed, window, every case's content hash and the ranks
    (each rank's streams are in it)."""
    cleaned = pd.read_parquet(paths.cleaned)
    data = cleaned[[ROW_ID, CONTENT_HASH]].to_numpy().tolist()
    key = json.dumps(
        {
            "train": params.train.model_dump(mode="json"),
            "seed": params.seed,
            "window": window,
            "data": data,
            "world": world,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()
