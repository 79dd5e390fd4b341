"""Test-set metrics with bootstrap confidence intervals; binary and multiclass."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def point_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    n_classes = proba.shape[1]
    pred = proba.argmax(axis=1)
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
    }
    present = np.unique(y)
    if n_classes == 2:
        out["f1"] = skm.f1_score(y, pred, zero_division=0)
        if len(present) == 2:
            out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
            out["pr_auc"] = skm.average_precision_score(y, proba[:, 1])
    else:
        out["f1"] = skm.f1_score(y, pred, average="macro", zero_division=0)
        if len(present) == n_classes:
            out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
            onehot = np.eye(n_classes)[y]
            out["pr_auc"] = skm.average_precision_score(onehot, proba, average="macro")
    return {k: float(v) for k, v in out.items()}


def bootstrap_ci(
    y: np.ndarray, proba: np.ndarray, n_boot: int = 500, alpha: float = 0.05, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile CIs from resampling test rows; resamples missing a class are skipped for rank metrics."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        for k, v in point_metrics(y[idx], proba[idx]).items():
            draws.setdefault(k, []).append(v)
    return {k: (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))) for k, v in draws.items()}
