"""evaluate: reads the model bundle, artifacts/clean/cleaned.parquet and the split manifest; writes
artifacts/evaluate/ (metrics.json, roc.json, plots/*.png) and logs test_* metrics to the training run.
Fails when the test split is empty.
"""

from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import confusion_matrix

from medflow import tracking
from medflow.evaluation.metrics import bootstrap_ci, point_metrics
from medflow.evaluation.plots import plot_confusion, plot_roc, roc_points
from medflow.models.bundle import Predictor
from medflow.params import Params
from medflow.paths import Paths
from medflow.steps.clean import LABEL
from medflow.steps.train import load_split


def run(params: Params, paths: Paths) -> dict:
    df, schema = load_split(paths)
    test = df[df["_split"] == "test"]
    if test.empty:
        raise ValueError(f"{paths.manifest}: the test split is empty; enlarge the data or split.test")
    # Scoring goes through the same Predictor the registered model uses.
    predictor = Predictor(paths.model_bundle)
    if schema.kind == "image":
        proba = predictor.predict_proba(np.load(paths.images, mmap_mode="r")[test.index.to_numpy()])
    else:
        proba = predictor.predict_proba(test)
    y = test[LABEL].to_numpy()

    point = point_metrics(y, proba)
    ci = bootstrap_ci(y, proba, seed=params.seed)
    metrics = {f"test_{k}": round(v, 6) for k, v in point.items()}
    for k, (lo, hi) in ci.items():
        metrics[f"test_{k}_ci_low"], metrics[f"test_{k}_ci_high"] = round(lo, 6), round(hi, 6)
    metrics["n_test"] = len(test)
    primary = f"test_{params.evaluate.primary_metric}"
    if primary not in metrics:
        raise ValueError(f"evaluate.primary_metric={params.evaluate.primary_metric!r} is undefined on this test split")

    out = paths.step_dir("evaluate")
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    points = roc_points(y, proba, schema.classes)
    (out / "roc.json").write_text(json.dumps(points) + "\n")
    plot_roc(points, plots / "roc.png")
    cm = confusion_matrix(y, proba.argmax(axis=1), labels=np.arange(len(schema.classes)))
    plot_confusion(cm, schema.classes, plots / "confusion_matrix.png")
    paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    run_id = json.loads(paths.train_run.read_text())["run_id"]
    tracking.configure(paths)
    tracking.log_metrics(run_id, metrics)
    tracking.log_artifacts(run_id, plots, "evaluation")
    return {"run_id": run_id, **{k: metrics[k] for k in sorted(metrics) if not k.endswith(("_low", "_high"))}}
