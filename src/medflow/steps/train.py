"""train: reads artifacts/clean/ and artifacts/split/manifest.csv; writes artifacts/train/ (model bundle with
the best weights and the preprocessing fitted on the training split, run.json, summary.json) and an MLflow
run. Fails when the training or validation split is empty.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from medflow import tracking
from medflow.data.features import Preprocessor, Schema
from medflow.models.bundle import save_bundle
from medflow.models.tabular import build
from medflow.params import Params
from medflow.paths import Paths
from medflow.steps.clean import LABEL, ROW_ID
from medflow.training.loop import FitConfig, fit, pick_device, seed_everything


def load_split(paths: Paths) -> tuple[pd.DataFrame, Schema]:
    df = pd.read_parquet(paths.cleaned)
    manifest = pd.read_csv(paths.manifest, usecols=["row_id", "split"])
    split = df[ROW_ID].map(dict(zip(manifest["row_id"], manifest["split"], strict=True)))
    if split.isna().any():
        raise ValueError(f"{paths.manifest}: {int(split.isna().sum())} cleaned row(s) have no split")
    return df.assign(_split=split.to_numpy()), Schema.load(paths.schema)


def balanced_weights(y: np.ndarray, n_classes: int) -> list[float]:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return (len(y) / (n_classes * np.maximum(counts, 1))).tolist()


def log_upstream(run_id: str, paths: Paths) -> None:
    """The data-quality counts and profile belong to the run that the model version points back to."""
    counts = {}
    for step in ("validate", "clean"):
        summary = json.loads(paths.summary(step).read_text())
        counts[f"{step}_rows_in"] = summary["rows_in"]
        counts[f"{step}_rows_quarantined"] = summary["rows_quarantined"]
    for split, rows in json.loads(paths.summary("split").read_text())["rows"].items():
        counts[f"{split}_rows"] = rows
    tracking.log_metrics(run_id, counts)
    profile = paths.step_dir("validate") / "profile"
    if profile.exists():
        tracking.log_artifacts(run_id, profile, "data_profile")


def run(params: Params, paths: Paths) -> dict:
    p = params.train
    df, schema = load_split(paths)
    parts = {s: df[df["_split"] == s] for s in ("train", "val")}
    for name, part in parts.items():
        if part.empty:
            raise ValueError(f"{paths.manifest}: the {name} split is empty; enlarge the data or split.{name}")
    pre = Preprocessor(schema.numeric, schema.categorical).fit(parts["train"])
    x = {s: torch.from_numpy(pre.transform(part)) for s, part in parts.items()}
    y = {s: torch.from_numpy(part[LABEL].to_numpy()) for s, part in parts.items()}

    seed_everything(params.seed, p.deterministic)
    config = {
        "name": p.model,
        "n_in": len(pre.feature_names),
        "n_classes": len(schema.classes),
        "hidden": p.hidden,
        "dropout": p.dropout,
    }
    model = build(**config)
    device = pick_device(p.device)
    cfg = FitConfig(
        lr=p.lr,
        weight_decay=p.weight_decay,
        batch_size=p.batch_size,
        max_epochs=p.max_epochs,
        patience=p.patience,
        seed=params.seed,
        device=str(device),
        class_weights=balanced_weights(y["train"].numpy(), len(schema.classes))
        if p.class_weights == "balanced"
        else None,
        deterministic=p.deterministic,
    )

    tracking.configure(paths)
    run_id = tracking.start_run(params, paths, run_name="pipeline")
    log_upstream(run_id, paths)

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        tracking.log_epoch(run_id, row, step=epoch)
        print(
            f"epoch {epoch:4d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_acc {row['val_accuracy']:.4f}  {row['rows_per_s']:,.0f} rows/s",
            flush=True,
        )

    try:
        result = fit(model, x["train"], y["train"], x["val"], y["val"], cfg, on_epoch)
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    model.cpu()
    save_bundle(paths.model_bundle, model, config, pre, schema)
    tracking.log_metrics(
        run_id,
        {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs": result.epochs_run},
    )
    tracking.end_run(run_id)
    paths.train_run.write_text(json.dumps({"run_id": run_id}) + "\n")
    summary = {
        "run_id": run_id,
        "device": str(device),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_val_loss": round(result.best_val_loss, 6),
        "features": len(pre.feature_names),
        "train_rows": len(parts["train"]),
        "val_rows": len(parts["val"]),
    }
    paths.summary("train").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
