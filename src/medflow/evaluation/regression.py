"""Regression metrics and their patient-level bootstrap, in the style of metrics.py: every metric is a ratio of
weighted sums (weights: a resample's draws of each patient), so a resample costs one matrix product.

MAE and RMSE in the target's units, R² = 1 - SSE/SST, calibration-in-the-large = mean observed - mean predicted
(0 is calibrated), calibration slope = cov(observed, predicted) / var(predicted), the slope of observed on predicted
(1 is calibrated, below 1 predictions too spread). The same resamples as metrics.py's for the same seed.
"""

from __future__ import annotations

import numpy as np

from medflow.evaluation.metrics import _patients, _ratio, _resample_counts, interval

METRICS = ("mae", "rmse", "r2", "calibration_in_the_large", "calibration_slope")


def _features(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    e = pred - y
    return np.column_stack([np.ones(len(y)), np.abs(e), e * e, y, y * y, pred, pred * pred, y * pred])


def _from_sums(s: np.ndarray) -> dict[str, np.ndarray]:
    n, ae, se, sy, syy, sp, spp, syp = s.T
    mean_y, mean_p = _ratio(sy, n), _ratio(sp, n)
    with np.errstate(invalid="ignore"):
        sst = syy - n * mean_y**2
        var_p = spp - n * mean_p**2
        cov = syp - n * mean_y * mean_p
        return {
            "mae": _ratio(ae, n),
            "rmse": np.sqrt(_ratio(se, n)),
            "r2": 1 - _ratio(se, np.where(sst > 1e-12 * np.maximum(syy, 1), sst, 0)),
            "calibration_in_the_large": mean_y - mean_p,
            "calibration_slope": _ratio(cov, np.where(var_p > 1e-12 * np.maximum(spp, 1), var_p, 0)),
        }


def _prepared(y: np.ndarray, out: np.ndarray, columns: np.ndarray | None, k: int) -> np.ndarray:
    """Each row's sums, added up per weight column (patient) when columns are given."""
    x = _features(np.asarray(y, float), np.asarray(out, float).reshape(len(y), -1)[:, 0])
    if columns is None:
        return x
    return np.stack([np.bincount(columns, f, minlength=k) for f in x.T], axis=1)


def point_metrics(y: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """out: predictions in the target's units, (rows,) or (rows, 1)."""
    found = _from_sums(_prepared(y, out, None, 0).sum(axis=0, keepdims=True))
    return {k: float(v[0]) for k, v in found.items()}


def bootstrap_draws(
    y: np.ndarray, outs: list[np.ndarray], groups: np.ndarray | None, metric: str, n_boot: int, seed: int
) -> np.ndarray:
    """metric of each model on the same n_boot patient resamples: (models, n_boot)."""
    inverse, k = _patients(groups, len(y))
    prepared = [_prepared(y, o, inverse, k) for o in outs]
    parts = [[_from_sums(c @ p)[metric] for p in prepared] for c in _resample_counts(k, len(y), n_boot, seed)]
    return np.concatenate(parts, axis=1) if parts else np.empty((len(outs), 0))


def bootstrap_ci(
    y: np.ndarray, out: np.ndarray, groups: np.ndarray | None, n_boot: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of every metric, resampling patients (groups) or rows (None)."""
    inverse, k = _patients(groups, len(y))
    prepared = _prepared(y, out, inverse, k)
    draws: dict[str, list[np.ndarray]] = {}
    for counts in _resample_counts(k, len(y), n_boot, seed):
        for name, v in _from_sums(counts @ prepared).items():
            draws.setdefault(name, []).append(v)
    return {name: interval(np.concatenate(v)) for name, v in draws.items()}
