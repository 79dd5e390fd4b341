"""train: reads artifacts/clean/ (cleaned.parquet, schema.json; images.npy for image data) and
artifacts/split/manifest.csv; writes artifacts/train/ (model bundle with the best weights and the preprocessing
fitted on the training split, run.json, summary.json), artifacts/.checkpoints/train.pt while a run is unfinished,
and an MLflow run. Fails when the training or validation split is empty, or train.model does not suit the data's kind.

Several processes or nodes (DistributedDataParallel, NCCL on GPUs, gloo on CPUs), through this module's own
entry point:

    torchrun --standalone --nproc_per_node 4 -m medflow.steps.train [--root DIR] [-P train.lr=3e-4 ...]
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv-endpoint HOST:29500 -m medflow.steps.train

Every rank reads the data (artifacts/ must be visible on every node) and trains its shard; rank 0 alone logs
to MLflow, prints, checkpoints and writes the bundle. `train.batch_size` is the global batch, split over the
ranks. Unlike `medflow step train` and `dvc repro`, which empty artifacts/train first, this entry keeps
artifacts/.checkpoints/train.pt, so a job restarted (by hand or by `torchrun --max-restarts`) continues where it
stopped. `python -m medflow.steps.train` runs one process the same way.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medflow import tracking
from medflow.console import say
from medflow.data.columns import SPLIT
from medflow.data.features import ImageNormaliser, Preprocessor, Schema
from medflow.data.image_store import ImageStore, StoreRows, return_freed_memory
from medflow.data.manifest import load_split, outcome
from medflow.models import sequence, vision
from medflow.models.bundle import save_bundle
from medflow.models.tabular import TREE_MODEL, build, check_kind
from medflow.params import Params
from medflow.params import load as load_params
from medflow.paths import Paths
from medflow.sequences.steps import grid_of, normaliser
from medflow.tasks import for_params
from medflow.training import distributed
from medflow.training.loop import FitConfig, Progress, fit, pick_device, seed_everything
from medflow.training.settings import LOOP_SETTINGS, balanced_weights, cpu_threads
from medflow.tuning.tuned import note as tuning_note


def open_run(params: Params, paths: Paths) -> tracking.OpenedRun:
    run = tracking.open_run(params, paths)
    # The data version this run read, in the audit trail of the model it trains: hashes, never rows.
    read = {k: v for k, v in run.tags.items() if k.startswith(("medflow.data_", "medflow.params_hash"))}
    tracking.audit.append(params.register.model_name, "data.read", f"runs:/{run.run_id}", None, read, run.run_id)
    # One training at a time per pipeline (the run lock): a run id left here is one a kill left RUNNING.
    paths.training_run.write_text(run.run_id)
    return run


def log_inputs(run: tracking.OpenedRun, params: Params, paths: Paths, schema: Schema) -> None:
    """What the model version points back to: the run's params (one write), the dataset (another), the data
    profile's files and Data Docs, and the data-quality counts, which wait to go out with the epochs' metrics."""
    tags = {}
    if tuned := tuning_note(params, paths):
        say(f"train: {tuned}")
        tags["medflow.tuned"] = tuned
    run.describe(tags)
    tracking.log_epoch(run.run_id, upstream_counts(paths), step=0)
    tracking.log_training_data(run.run_id, run.tags, params, paths, schema)
    profile = paths.step_dir("validate") / "profile"
    if profile.exists():
        tracking.log_artifacts(run.run_id, profile, "data_profile")
    # validate opens no MLflow run: its Data Docs go with the run its valid rows train.
    if paths.data_docs.exists():
        tracking.log_artifacts(run.run_id, paths.data_docs, "data_docs")


def upstream_counts(paths: Paths) -> dict[str, int]:
    counts = {}
    for step in ("validate", "clean"):
        summary = json.loads(paths.summary(step).read_text())
        counts[f"{step}_rows_in"] = summary["rows_in"]
        counts[f"{step}_rows_quarantined"] = summary["rows_quarantined"]
    for split, rows in json.loads(paths.summary("split").read_text())["rows"].items():
        counts[f"{split}_rows"] = rows
    return counts


def survival_curve(params: Params, task, model, x_train: torch.Tensor, y_train: torch.Tensor) -> dict:
    """The Breslow baseline of the trained model's risk scores (a network's or the trees') on the training split,
    and the horizons predict answers at (train.horizons, or the training split's event-time quartiles)."""
    from medflow.models.cox import Baseline

    if isinstance(model, torch.nn.Module):
        with torch.inference_mode():
            risk = model.eval()(x_train).double().numpy()[:, 0]
    else:
        risk = model.proba(x_train.numpy())
    time, event = y_train[:, 0].double().numpy(), y_train[:, 1].numpy() > 0
    base = Baseline.fit(risk, time, event)
    return {
        "times": base.times.tolist(),
        "cumhaz": base.cumhaz.tolist(),
        "shift": base.shift,
        "horizons": task.horizons(params, time, event),
    }


def features(params: Params, paths: Paths, df: pd.DataFrame, schema: Schema):
    """Tensors of the train/val splits, the fitted preprocessing, the model config and the target's scale (None for
    classes), for either kind of data."""
    model = params.train.model
    task = for_params(params)
    positions = {s: np.flatnonzero(df[SPLIT].to_numpy() == s) for s in ("train", "val")}
    y, scale = task.learning_targets({s: outcome(df.iloc[pos]) for s, pos in positions.items()})
    if schema.kind == "image":
        store = ImageStore(paths.images)
        if len(store) != len(df) or list(store.shape) != schema.image_shape:
            raise ValueError(
                f"images.npy holds {[len(store), *store.shape]}; cleaned.parquet and schema.json expect "
                f"{[len(df), *schema.image_shape]}"
            )
        x = {s: StoreRows(store, pos) for s, pos in positions.items()}
        budget = params.train.memory_budget_mb
        if budget is not None:
            return_freed_memory()
        if budget is None or sum(r.nbytes for r in x.values()) <= budget * 2**20:
            images = np.load(paths.images, mmap_mode="r")
            x = {s: torch.from_numpy(np.ascontiguousarray(images[r.rows])) for s, r in x.items()}
        pre = ImageNormaliser.fit(x["train"] if isinstance(x["train"], StoreRows) else x["train"].numpy())
        h, w, c = schema.image_shape
        config = {"name": model, "in_shape": [c, h, w], "n_classes": task.head_width(schema)}
        config |= vision.options(model, params.train)
    elif schema.kind in ("events", "signals"):
        raw = grid_of(paths)
        pre = normaliser(paths, positions["train"], params)
        chunk = params.data.events.chunk_stays
        x = {s: torch.from_numpy(pre.transform(raw[pos], chunk)) for s, pos in positions.items()}
        config = {"name": model, "n_classes": task.head_width(schema)}
        config |= sequence.options(params.train, pre.channels, raw.shape[1])
    else:
        pre = Preprocessor(schema.numeric, schema.categorical, small_count=params.validate_.small_count)
        pre = pre.fit(df.iloc[positions["train"]])
        x = {s: torch.from_numpy(pre.transform(df.iloc[pos])) for s, pos in positions.items()}
        config = {
            "name": model,
            "n_in": len(pre.feature_names),
            "n_classes": task.head_width(schema),
            "hidden": params.train.hidden,
            "dropout": params.train.dropout,
        }
    return x, y, pre, config, scale


def _recalibration(method: str, paths: Paths, df) -> dict:
    """train.recalibrate fitted on the validation split's probabilities, scored as evaluate scores them."""
    from medflow.data.columns import LABEL, SPLIT
    from medflow.evaluation.calibration import fit_recalibration
    from medflow.evaluation.heldout import score
    from medflow.models.bundle import Predictor

    predictor = Predictor(paths.model_bundle)
    val = df[df[SPLIT] == "val"]
    return fit_recalibration(method, val[LABEL].to_numpy(), score(predictor, paths, val, predictor.schema.kind))


def run(params: Params, paths: Paths) -> dict:
    if for_params(params).name == "segmentation":
        from medflow.segmentation import train as segmentation

        return segmentation.run(params, paths, tuning_note(params, paths))
    p = params.train
    # Before anything is read or written: under torchrun every rank must join the group first.
    device = distributed.setup(pick_device(p.device))
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(p, distributed.rank_world()[1]))
    try:
        return train(params, paths, device)
    finally:
        distributed.teardown()


def train(params: Params, paths: Paths, device: torch.device) -> dict:
    p = params.train
    rank, world = distributed.rank_world()
    # What refuses the run is checked before one opens: a misconfiguration leaves no FAILED run behind.
    schema = Schema.load(paths.schema)
    task = for_params(params)
    if task.name != schema.outcome:
        raise ValueError(f"{paths.schema}: cleaned for data.task={schema.outcome}; rerun clean for {task.name}")
    check_kind(p.model, schema.kind)
    rows = json.loads(paths.summary("split").read_text())["rows"]
    for name in ("train", "val"):
        if not rows.get(name):
            raise ValueError(f"{paths.manifest}: the {name} split is empty; enlarge the data or split.{name}")
    ckpt = paths.checkpoint

    opened, inputs = None, None
    if rank == 0:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tracking.configure(paths)
        if paths.training_run.exists() and tracking.end_orphaned_run(paths.training_run.read_text().strip()):
            say("the MLflow run of a killed training was still RUNNING: marked KILLED")
        # The run is opened and its inputs logged from a thread while the data loads and the features are built:
        # the lineage's hashing and git, pyarrow and numpy leave the interpreter lock free much of that time, and
        # the store's ~30 ms of round trips hold it.
        pool = ThreadPoolExecutor(1, thread_name_prefix="medflow-run")
        opened = pool.submit(open_run, params, paths)
        inputs = pool.submit(lambda: log_inputs(opened.result(), params, paths, schema))
        pool.shutdown(wait=False)
    run_id = None

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        tracking.log_epoch(run_id, row, step=epoch)

    try:
        df, schema = load_split(paths)
        x, y, pre, config, scale = features(params, paths, df, schema)
        if opened:
            run_id = opened.result().run_id  # a run that cannot open (a busy store, PHI in params) stops here
        seed_everything(params.seed, p.deterministic)
        if p.model == TREE_MODEL:
            from medflow.training.trees import fit_trees  # XGBoost is imported only to train trees

            arrays = ({s: t.numpy() for s, t in x.items()}, {s: t.numpy() for s, t in y.items()})
            progress = Progress(p.n_estimators, "rows/s")
            objective, n_classes = task.tree_objective(p, schema), len(schema.classes)
            model, result = fit_trees(*arrays, objective, n_classes, p, params.seed, on_epoch, progress, scale)
            config = model.config(p.model, len(schema.classes))
        else:
            model = build(**config)
            balanced = p.class_weights == "balanced" and task.has_classes
            cfg = FitConfig(
                **p.model_dump(include=LOOP_SETTINGS),
                seed=params.seed,
                device=str(device),
                class_weights=balanced_weights(y["train"].numpy(), len(schema.classes)) if balanced else None,
                mean=tuple(pre.mean) if schema.kind == "image" else None,
                std=tuple(pre.std) if schema.kind == "image" else None,
                checkpoint=ckpt,
                task=task.name,
                loss=p.loss,
                metric_scale=scale["std"] if scale else 1.0,
            )
            unit = "img/s" if schema.kind == "image" else "rows/s"
            progress = Progress(p.max_epochs, unit)
            result = fit(model, x["train"], y["train"], x["val"], y["val"], cfg, on_epoch, progress)
        if inputs:
            inputs.result()
    except BaseException as exc:
        # Waits for the thread: a run it opened is closed after its last write; the error raised is the step's own.
        if opened and opened.exception() is None:
            inputs.exception()
            # An interrupt (Ctrl-C, SIGTERM: not an Exception) is a kill, not a failure of the model or the data.
            tracking.end_run(opened.result().run_id, "FAILED" if isinstance(exc, Exception) else "KILLED")
            paths.training_run.unlink(missing_ok=True)
        raise
    score = f"val_{task.epoch_metric}"
    best_score = result.history[result.best_epoch - 1][score] if result.best_epoch else None
    summary = {
        "run_id": run_id,
        "device": str(device),
        "world_size": world,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "resumed_from": result.resumed_from,
        "best_val_loss": round(result.best_val_loss, 6),
        f"best_{score}": best_score,
        "train_rows": len(x["train"]),
        "val_rows": len(x["val"]),
    }
    if schema.kind == "image":
        summary["image_shape"] = schema.image_shape
        summary["streamed"] = isinstance(x["train"], StoreRows)  # from the store on disk (train.memory_budget_mb)
    elif schema.kind in ("events", "signals"):
        summary["grid"] = [int(x["train"].shape[1]), int(x["train"].shape[2])]
    else:
        summary["features"] = len(pre.feature_names)
    if rank != 0:
        return summary
    # The epochs before a restart were logged to the failed run; the run that owns the model gets them too.
    for epoch, row in enumerate(result.history[: result.resumed_from], start=1):
        tracking.log_epoch(run_id, row, step=epoch)
    if isinstance(model, torch.nn.Module):
        model.cpu()
    # A regression bundle records its target's scale: the Predictor answers in the target's units; a survival
    # bundle its Breslow baseline and horizons: the Predictor answers survival probabilities.
    extra = {"target_scale": scale} if scale else {}
    if task.name == "survival":
        extra = {"survival": survival_curve(params, task, model, x["train"], y["train"])}
    save_bundle(paths.model_bundle, model, config | extra, pre, schema)
    if p.recalibrate != "none" and task.has_classes:
        fitted = _recalibration(p.recalibrate, paths, df)
        save_bundle(paths.model_bundle, model, config | {"recalibration": fitted}, pre, schema)
        summary["recalibration"] = fitted
    ckpt.unlink(missing_ok=True)  # the bundle is the result: a finished run leaves nothing to resume
    tracking.log_metrics(
        run_id,
        {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs": result.epochs_run},
    )
    tracking.end_run(run_id)
    paths.training_run.unlink(missing_ok=True)
    paths.train_run.write_text(json.dumps({"run_id": run_id}) + "\n")
    paths.summary("train").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medflow.steps.train", description="the train step, torchrun-ready")
    ap.add_argument("--root", default=".", help="project root (holds params.yaml)")
    ap.add_argument("--params", help="params file (default: params.yaml in the root)")
    ap.add_argument("-P", dest="override", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    paths = Paths.for_params(args.root, args.params)
    summary = run(load_params(Path(args.params) if args.params else paths.params_file, args.override), paths)
    if summary["run_id"]:  # rank 0's
        say("train: " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
