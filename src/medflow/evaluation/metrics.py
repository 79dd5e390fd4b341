"""Test-set metrics and their patient-level bootstrap intervals; binary and multiclass.

A bootstrap resample is a row-weight vector: each patient drawn c times gives all their rows weight c. Every
metric below is computed for a whole (resamples x rows) weight matrix at once, so 1,000 resamples cost a few
cumulative sums instead of 1,000 sklearn calls. The bootstraps prepare each model once (rows summed per patient,
scores ranked) and weigh patients directly, so no resample sorts; bootstrap_draws scores several models on the same
resamples. With no patient id, each row is its own patient.
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


def _cum0(w: np.ndarray) -> np.ndarray:
    """Running sums along each weight row, led by a 0: entry j is the weight of the first j columns."""
    cum = np.zeros((len(w), w.shape[1] + 1))
    np.cumsum(w, axis=1, out=cum[:, 1:])
    return cum


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
    first: np.ndarray  # per positive: positives scored strictly lower (the first of its tie block)
    constant: bool  # one score for every row (a majority-class baseline): every pair tied, one threshold

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
        first = np.searchsorted(pos_score, pos_score, "left")
        constant = bool(len(score)) and score.min() == score.max()
        return cls(columns[~truth][neg_order], columns[truth][pos_order], below, tied, through[tied], first, constant)

    def scores(self, w: np.ndarray, auc: bool = True, ap: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """ROC-AUC (the weighted share of (positive, negative) pairs ranked right, ties counting half) and sklearn's
        average precision per weight row, sharing the gathered weights and the negatives' sums."""
        wp = w[:, self.pos]
        if self.constant:
            # Every pair tied: half credit each, so exactly 1/2; one threshold holding all rows: precision P / (P + N).
            p, n = wp.sum(axis=1), w[:, self.neg].sum(axis=1)
            half, share = np.where(p * n > 0, 0.5, np.nan), _ratio(p, np.where(p > 0, p + n, 0))
            return half if auc else None, share if ap else None
        neg_cum = _cum0(w[:, self.neg])
        under = neg_cum[:, self.below]  # per positive: negative weight scored lower
        return self._auc(wp, neg_cum, under) if auc else None, self._ap(wp, neg_cum, under) if ap else None

    def _auc(self, wp: np.ndarray, neg_cum: np.ndarray, under: np.ndarray) -> np.ndarray:
        """Each positive earns the negative weight below it, half of that tied with it."""
        right = np.einsum("ij,ij->i", wp, under)
        if len(self.tied):
            half = neg_cum[:, self.through] - under[:, self.tied]
            right += 0.5 * np.einsum("ij,ij->i", wp[:, self.tied], half)
        return _ratio(right, wp.sum(axis=1) * neg_cum[:, -1])

    def _ap(self, wp: np.ndarray, neg_cum: np.ndarray, under: np.ndarray) -> np.ndarray:
        """sklearn's sum over thresholds of (recall step) x precision: each positive's weight is its share of the
        recall step of its tie block, at that block's precision (the weight scored at or above it that is positive).
        """
        pos_cum = _cum0(wp)
        tp = pos_cum[:, -1:] - pos_cum[:, self.first]
        called = neg_cum[:, -1:] - under
        called += tp
        # A block with no weight has no precision; its positives have no weight either, so it adds nothing.
        precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
        return _ratio(np.einsum("ij,ij->i", wp, precision), pos_cum[:, -1])


def _calibration_target(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary: P(positive) against the label; multiclass: top-label confidence against being right."""
    if proba.shape[1] == 2:
        return proba[:, 1], (y == 1).astype(float)
    return proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)


def bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((conf * n_bins).astype(int), n_bins - 1)


def _squared_error(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Binary: (p - y)^2 as sklearn's brier_score_loss; multiclass: squared distance to the one-hot label."""
    if proba.shape[1] == 2:
        return (proba[:, 1] - (y == 1)) ** 2
    return ((proba - np.eye(proba.shape[1])[y]) ** 2).sum(axis=1)


_RANK = ("roc_auc", "pr_auc")


@dataclass(frozen=True)
class _Prepared:
    """weighted_metrics' rows reduced once for any number of weight chunks: each row's counts and sums are added up
    per weight column (row or patient), so a chunk's every count is one product with its weights, and each score
    column is ranked once."""

    n_classes: int
    sums: np.ndarray  # weight columns x features
    at: dict[str, slice]  # each feature's columns in sums
    ranked: list[_Ranked]  # binary: the positive class; multiclass: each class against the rest

    @classmethod
    def of(
        cls,
        y: np.ndarray,
        proba: np.ndarray,
        threshold: float | None = None,
        n_bins: int = 10,
        columns: np.ndarray | None = None,
        n_columns: int = 0,
    ) -> _Prepared:
        """columns: each row's weight column (its patient), of n_columns; None: the weights weigh rows."""
        n_classes = proba.shape[1]
        pred = proba.argmax(axis=1)
        classes = np.arange(n_classes)
        truth, called = y[:, None] == classes, pred[:, None] == classes
        conf, hit = _calibration_target(y, proba)
        bins = np.eye(n_bins)[bin_index(conf, n_bins)]
        features = {
            "n": np.ones(len(y)),
            "right": pred == y,
            "truth": truth,
            "called": called,
            "hit": truth & called,
            "sq": _squared_error(y, proba),
            "bin_hit": bins * hit[:, None],
            "bin_conf": bins * conf[:, None],
        }
        if threshold is not None and n_classes == 2:
            above, pos = proba[:, 1] >= threshold, y == 1
            features |= {"tp@": above & pos, "fp@": above & ~pos, "fn@": ~above & pos, "tn@": ~above & ~pos}
        parts = [np.asarray(v, float).reshape(len(y), -1) for v in features.values()]
        edges = np.cumsum([0] + [x.shape[1] for x in parts])
        x = np.hstack(parts)
        if columns is not None:
            x = np.stack([np.bincount(columns, f, minlength=n_columns) for f in x.T], axis=1)
        ranked = [_Ranked.of(y == c, proba[:, c], columns) for c in ([1] if n_classes == 2 else classes)]
        return cls(n_classes, x, dict(zip(features, map(slice, edges[:-1], edges[1:]), strict=True)), ranked)

    def on(self, w: np.ndarray, rank: tuple[str, ...] = _RANK) -> dict[str, np.ndarray]:
        """Every metric per weight row, the rank metrics only those named in rank (they cost the most)."""
        sums = w @ self.sums
        one = {k: sums[:, at] for k, at in self.at.items()}
        total, tp, n_true, n_called = one["n"][:, 0], one["hit"], one["truth"], one["called"]
        out = {"accuracy": _ratio(one["right"][:, 0], total)}
        with np.errstate(invalid="ignore"):
            out["balanced_accuracy"] = np.nanmean(_ratio(tp, n_true), axis=1)
        f1 = _ratio(2 * tp, n_true + n_called)
        if self.n_classes == 2:
            out["f1"] = np.nan_to_num(f1[:, 1])  # zero_division=0, as point_metrics
        else:
            with np.errstate(invalid="ignore"):
                out["f1"] = np.nanmean(f1, axis=1)  # macro over the labels seen in truth or prediction, as sklearn
        if rank:
            # Multiclass: the macro average over classes; a class absent from a resample leaves it undefined, as
            # point_metrics leaves it out.
            scores = [r.scores(w, "roc_auc" in rank, "pr_auc" in rank) for r in self.ranked]
            out |= {k: np.mean([s[i] for s in scores], axis=0) for i, k in enumerate(_RANK) if k in rank}
        out["brier"] = _ratio(one["sq"][:, 0], total)
        out["ece"] = _ratio(np.abs(one["bin_hit"] - one["bin_conf"]).sum(axis=1), total)
        if "tp@" in one:
            tp, fp, fn, tn = (one[k][:, 0] for k in ("tp@", "fp@", "fn@", "tn@"))
            out |= {
                "sensitivity": _ratio(tp, tp + fn),
                "specificity": _ratio(tn, tn + fp),
                "ppv": _ratio(tp, tp + fp),
                "npv": _ratio(tn, tn + fn),
            }
        return out

    def metric(self, name: str, w: np.ndarray) -> np.ndarray:
        """One metric per weight row. A rank metric alone skips the per-row sums every other metric reads (a
        matrix product that took a quarter of the gate's bootstrap at 150k test rows) and the other rank metric."""
        if name not in _RANK:
            return _pick(name, self.on(w, rank=()))
        i = _RANK.index(name)
        return np.mean([r.scores(w, name == "roc_auc", name == "pr_auc")[i] for r in self.ranked], axis=0)


def weighted_metrics(
    y: np.ndarray, proba: np.ndarray, w: np.ndarray, threshold: float | None = None, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Every headline metric for each row of w; NaN where a resample leaves a metric undefined (a class absent).

    Brier: mean (p - y)^2 as sklearn's brier_score_loss (multiclass: squared distance to the one-hot label). ECE:
    sum over equal-width confidence bins of |sum of outcomes - sum of confidences| / n (binary: P(positive) against
    the label; multiclass: top-label confidence against being right). Threshold metrics (binary, with a
    threshold): sensitivity, specificity, PPV and NPV calling positive every score >= threshold.
    """
    return _Prepared.of(y, proba, threshold, n_bins).on(w)


def ece(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    return float(_Prepared.of(y, proba, None, n_bins).on(np.ones((1, len(y))), rank=())["ece"][0])


def _pick(name: str, found: dict[str, np.ndarray]) -> np.ndarray:
    if name not in found:
        known = sorted({*found, *_RANK})
        raise ValueError(f"no metric {name!r} here: {known} (the threshold metrics need a threshold)")
    return found[name]


def weighted_metric(
    name: str, y: np.ndarray, proba: np.ndarray, w: np.ndarray, threshold: float | None = None
) -> np.ndarray:
    """One metric of weighted_metrics, computing only what it needs."""
    return _Prepared.of(y, proba, threshold).metric(name, w)


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


def resampled_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mean of values (NaN left out) on each resample, a row of weights."""
    ok = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(ok, values, 0.0)) / (weights @ ok)


def mean_draws(values: np.ndarray, groups: np.ndarray | None, n_boot: int, seed: int) -> np.ndarray:
    """The mean of per-case values on each patient-bootstrap resample of resample_weights."""
    return np.concatenate([resampled_means(w, values) for w in resample_weights(groups, len(values), n_boot, seed)])


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
    model's interval and every paired difference. Each model's rows are summed per patient and its scores ranked
    once; resamples weigh patients directly, so a resample costs a few passes over the rows per model, not a sort.
    """
    inverse, k = _patients(groups, len(y))
    prepared = [_Prepared.of(y, p, threshold, columns=inverse, n_columns=k) for p in probas]
    parts = [
        [model.metric(metric, counts) for model in prepared] for counts in _resample_counts(k, len(y), n_boot, seed)
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
    inverse, k = _patients(groups, len(y))
    prepared = _Prepared.of(y, proba, threshold, n_bins, inverse, k)
    draws: dict[str, list[np.ndarray]] = {}
    for counts in _resample_counts(k, len(y), n_boot, seed):
        for name, v in prepared.on(counts).items():
            draws.setdefault(name, []).append(v)
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
