"""Test-set metrics and their patient-level bootstrap intervals; binary and multiclass.

A bootstrap resample is a row-weight vector: each patient drawn c times gives all their rows weight c. Every
metric below is computed for a whole (resamples x rows) weight matrix at once, so 1,000 resamples cost a few
cumulative sums instead of 1,000 sklearn calls; bootstrap_draws scores several models on the same resamples and
ranks each model once. With no patient id, each row is its own patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# Rows x resamples held in memory at once (float64): bounds a chunk to ~16 MB whatever the test split's size.
_CHUNK_CELLS = 2_000_000
LEVEL = 0.95


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


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _tie_blocks(score: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row order by score and the start of each block of equal scores: tied rows share one threshold."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    s = score[order]
    return order, np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def _block_sums(w: np.ndarray, truth: np.ndarray, order: np.ndarray, starts: np.ndarray):
    wo, t = w[:, order], truth[order]
    return np.add.reduceat(wo * t, starts, axis=1), np.add.reduceat(wo * ~t, starts, axis=1)


@dataclass(frozen=True)
class _Ranked:
    """One score column ranked once, reused by every resample: weights only gather and add, nothing sorts again.

    Columns index the weight matrix: rows, or patients when each resample weighs patients (all their rows alike).
    """

    neg: np.ndarray  # weight column of each negative row, by ascending score
    pos: np.ndarray  # weight column of each positive row, by ascending score
    below: np.ndarray  # per positive: negatives scored strictly lower
    tied: np.ndarray  # the positives that share their score with a negative
    through: np.ndarray  # per tied positive: negatives scored lower or equal

    @classmethod
    def of(cls, truth: np.ndarray, score: np.ndarray, columns: np.ndarray | None = None) -> _Ranked:
        truth = truth.astype(bool)
        columns = np.arange(len(score)) if columns is None else columns
        neg_order = np.argsort(score[~truth], kind="stable")
        pos_order = np.argsort(score[truth], kind="stable")
        neg_score, pos_score = score[~truth][neg_order], score[truth][pos_order]
        below = np.searchsorted(neg_score, pos_score, "left")
        through = np.searchsorted(neg_score, pos_score, "right")
        tied = np.flatnonzero(through > below)
        return cls(columns[~truth][neg_order], columns[truth][pos_order], below, tied, through[tied])

    def auc(self, w: np.ndarray) -> np.ndarray:
        """ROC-AUC per weight row: each positive earns the negative weight below it, half of that tied with it."""
        cum = np.zeros((len(w), len(self.neg) + 1))
        np.cumsum(w[:, self.neg], axis=1, out=cum[:, 1:])
        wp = w[:, self.pos]
        right = np.einsum("ij,ij->i", wp, cum[:, self.below])
        if len(self.tied):
            half = cum[:, self.through] - cum[:, self.below[self.tied]]
            right += 0.5 * np.einsum("ij,ij->i", wp[:, self.tied], half)
        return _ratio(right, wp.sum(axis=1) * cum[:, -1])


def weighted_roc_auc(truth: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC-AUC per weight row: the weighted share of (positive, negative) pairs ranked right, ties counting half."""
    return _Ranked.of(truth, score).auc(w)


def weighted_average_precision(truth: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sklearn's average precision per weight row: sum over thresholds of (recall step) x precision."""
    tp, fp = _block_sums(w, truth.astype(bool), *_tie_blocks(score, descending=True))
    ctp = np.cumsum(tp, axis=1)
    precision = np.nan_to_num(_ratio(ctp, ctp + np.cumsum(fp, axis=1)))
    return _ratio((tp * precision).sum(axis=1), tp.sum(axis=1))


def _calibration_target(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary: P(positive) against the label; multiclass: top-label confidence against being right."""
    if proba.shape[1] == 2:
        return proba[:, 1], (y == 1).astype(float)
    return proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)


def bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((conf * n_bins).astype(int), n_bins - 1)


def weighted_ece(y: np.ndarray, proba: np.ndarray, w: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Expected calibration error over equal-width bins: sum_b |sum of outcomes - sum of confidences| / n."""
    conf, hit = _calibration_target(y, proba)
    onehot = np.eye(n_bins)[bin_index(conf, n_bins)]
    gap = w @ (onehot * hit[:, None]) - w @ (onehot * conf[:, None])
    return _ratio(np.abs(gap).sum(axis=1), w.sum(axis=1))


def ece(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    return float(weighted_ece(y, proba, np.ones((1, len(y))), n_bins)[0])


def weighted_brier(y: np.ndarray, proba: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Binary: mean (p - y)^2 as sklearn's brier_score_loss; multiclass: mean squared distance to the one-hot label."""
    if proba.shape[1] == 2:
        sq = (proba[:, 1] - (y == 1)) ** 2
    else:
        sq = ((proba - np.eye(proba.shape[1])[y]) ** 2).sum(axis=1)
    return _ratio(w @ sq, w.sum(axis=1))


def at_threshold(y: np.ndarray, score: np.ndarray, threshold: float, w: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV and NPV per weight row, calling positive every score >= threshold."""
    called, pos = score >= threshold, y == 1
    tp, fp = w @ (called & pos), w @ (called & ~pos)
    fn, tn = w @ (~called & pos), w @ (~called & ~pos)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def weighted_metrics(
    y: np.ndarray, proba: np.ndarray, w: np.ndarray, threshold: float | None = None, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Every headline metric for each row of w; NaN where a resample leaves a metric undefined (a class absent)."""
    n_classes = proba.shape[1]
    pred = proba.argmax(axis=1)
    total = w.sum(axis=1)
    classes = np.arange(n_classes)
    truth = y[:, None] == classes  # rows x classes
    called = pred[:, None] == classes
    tp = w @ (truth & called)
    n_true, n_called = w @ truth, w @ called
    out = {"accuracy": _ratio(w @ (pred == y), total)}
    with np.errstate(invalid="ignore"):
        out["balanced_accuracy"] = np.nanmean(_ratio(tp, n_true), axis=1)
    f1 = _ratio(2 * tp, n_true + n_called)
    if n_classes == 2:
        out["f1"] = np.nan_to_num(f1[:, 1])  # zero_division=0, as point_metrics
        out["roc_auc"] = weighted_roc_auc(y == 1, proba[:, 1], w)
        out["pr_auc"] = weighted_average_precision(y == 1, proba[:, 1], w)
    else:
        with np.errstate(invalid="ignore"):
            out["f1"] = np.nanmean(f1, axis=1)  # macro over the labels seen in truth or prediction, as sklearn
        # A class absent from a resample makes the macro averages undefined, as point_metrics leaves them out.
        out["roc_auc"] = np.mean([weighted_roc_auc(y == c, proba[:, c], w) for c in classes], axis=0)
        out["pr_auc"] = np.mean([weighted_average_precision(y == c, proba[:, c], w) for c in classes], axis=0)
    out["brier"] = weighted_brier(y, proba, w)
    out["ece"] = weighted_ece(y, proba, w, n_bins)
    if threshold is not None and n_classes == 2:
        out.update(at_threshold(y, proba[:, 1], threshold, w))
    return out


def weighted_metric(
    name: str, y: np.ndarray, proba: np.ndarray, w: np.ndarray, threshold: float | None = None
) -> np.ndarray:
    """One metric of weighted_metrics; a binary rank metric alone costs a third of them all."""
    if proba.shape[1] == 2 and name in ("roc_auc", "pr_auc"):
        fn = weighted_roc_auc if name == "roc_auc" else weighted_average_precision
        return fn(y == 1, proba[:, 1], w)
    found = weighted_metrics(y, proba, w, threshold)
    if name not in found:
        raise ValueError(f"no metric {name!r} here: {sorted(found)} (the threshold metrics need a threshold)")
    return found[name]


def _patients(groups: np.ndarray | None, n_rows: int) -> tuple[np.ndarray | None, int]:
    """Each row's patient index (None: each row is its own patient) and the number of patients."""
    if groups is None:
        return None, n_rows
    _, inverse = np.unique(groups, return_inverse=True)
    return inverse, int(inverse.max()) + 1 if n_rows else 0


def _resample_counts(k: int, n_rows: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of (resamples x patients) draw counts; the chunk size bounds the row weights they expand to."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n_rows, 1))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        # k uniform draws per resample, counted: the multinomial(k, uniform) distribution, ~5x faster than
        # rng.multinomial's per-category binomials. Offsets give each resample its own k bins of one bincount.
        draws = rng.integers(0, k, size=(m, k)) + (np.arange(m) * k)[:, None]
        yield np.bincount(draws.ravel(), minlength=m * k).reshape(m, k).astype(float)


def resample_weights(groups: np.ndarray | None, n_rows: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of bootstrap row weights: patients drawn with replacement, each row weighted by its patient's draws."""
    inverse, k = _patients(groups, n_rows)
    for counts in _resample_counts(k, n_rows, n_boot, seed):
        yield counts if inverse is None else counts[:, inverse]


def bootstrap_draws(
    y: np.ndarray,
    probas: list[np.ndarray],
    groups: np.ndarray | None = None,
    metric: str = "roc_auc",
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
) -> np.ndarray:
    """metric (a key of weighted_metrics) of each model on the same n_boot resamples: (models, n_boot), NaN where
    a resample leaves it undefined. probas: (rows, classes) probabilities of each model on the same rows.

    Every model sees the resamples of resample_weights(groups, len(y), n_boot, seed), so one call serves each
    model's interval and every paired difference. ROC-AUC ranks each model once and weighs patients directly: a
    resample costs a few passes over the rows per model, not a sort.
    """
    if metric != "roc_auc":
        parts = [
            [weighted_metric(metric, y, p, w, threshold) for p in probas]
            for w in resample_weights(groups, len(y), n_boot, seed)
        ]
    else:
        inverse, k = _patients(groups, len(y))
        # Multiclass: the macro average of one-vs-rest AUCs, as weighted_metrics.
        n_classes = probas[0].shape[1] if probas else 2
        classes = [1] if n_classes == 2 else range(n_classes)
        ranked = [[_Ranked.of(y == c, p[:, c], inverse) for c in classes] for p in probas]
        parts = [
            [np.mean([r.auc(counts) for r in model], axis=0) for model in ranked]
            for counts in _resample_counts(k, len(y), n_boot, seed)
        ]
    return np.concatenate(parts, axis=1) if parts else np.empty((len(probas), 0))


def patient_groups(keys) -> np.ndarray | None:
    """Patient keys; a row without one (no patient id in the data) is its own patient. None when no row has one."""
    keys = pd.Series(keys, dtype="string").reset_index(drop=True)
    missing = keys.isna() | (keys == "")
    if missing.all():
        return None
    return keys.mask(missing, "\0row" + keys.index.astype(str)).to_numpy(dtype=str)


def interval(draws: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap draws, leaving out the NaN of resamples where a metric is undefined."""
    ok = draws[~np.isnan(draws)]
    if not len(ok):
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    y: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
    n_bins: int = 10,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of every weighted_metrics metric, resampling patients (groups) or rows (None).

    Resamples where a metric is undefined (a class missing) are left out of that metric's interval.
    """
    draws: dict[str, list[np.ndarray]] = {}
    for w in resample_weights(groups, len(y), n_boot, seed):
        for k, v in weighted_metrics(y, proba, w, threshold, n_bins).items():
            draws.setdefault(k, []).append(v)
    return {k: interval(np.concatenate(v)) for k, v in draws.items()}


def metric_ci(
    y: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray | None = None,
    metric: str = "roc_auc",
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
) -> tuple[float, float]:
    """bootstrap_ci(...)[metric] computing that metric alone on each resample (see bootstrap_draws)."""
    return interval(bootstrap_draws(y, [proba], groups, metric, n_boot, seed, threshold)[0])


@dataclass(frozen=True)
class Delta:
    """metric(candidate) - metric(reference) on the same rows, with its paired bootstrap interval."""

    metric: str
    delta: float
    ci_low: float
    ci_high: float
    n_boot: int  # resamples where the metric was defined for both models


def paired_bootstrap_delta(
    y: np.ndarray,
    proba_candidate: np.ndarray,
    proba_reference: np.ndarray,
    groups: np.ndarray | None = None,
    metric: str = "roc_auc",
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
) -> Delta:
    """Both models scored on each resample of the same patients, so the interval holds only the models' difference.

    proba_*: (rows, classes) probabilities of the two models on the same rows; metric: a key of weighted_metrics
    (sensitivity, specificity, ppv, npv need a threshold).
    """
    if proba_candidate.shape != proba_reference.shape or len(y) != len(proba_candidate):
        raise ValueError(f"paired scores need the same rows: {proba_candidate.shape} vs {proba_reference.shape}")
    one = np.ones((1, len(y)))
    pair = [proba_candidate, proba_reference]
    point = [float(weighted_metric(metric, y, p, one, threshold)[0]) for p in pair]
    return paired_delta(metric, point, bootstrap_draws(y, pair, groups, metric, n_boot, seed, threshold))


def paired_delta(metric: str, point: list[float], draws: np.ndarray) -> Delta:
    """The Delta of two models from their point values and their draws on the same resamples (2 x n_boot)."""
    d = draws[0] - draws[1]
    lo, hi = interval(d)
    return Delta(metric, point[0] - point[1], lo, hi, int((~np.isnan(d)).sum()))
