"""The training reference a new batch is compared with: per-feature aggregates of the TRAINING split and the
model's score distribution on validation + test, written by `register` beside the gate report and logged on the
version's run. Aggregates only, never rows: numeric features as quantile bins whose counts are merged until each
holds at least validate.small_count rows (open-ended outer bins, so no minimum or maximum is stored), mean, sd,
null rate and quartiles; categories with fewer rows than small_count pooled into one "<other>" count (dropped
when the pool itself is smaller than that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.columns import SPLIT
from medflow.data.features import MISSING, OTHER, Schema, coerce_features, pool_rare

VERSION = 1


def merge_small(
    edges: list[float], counts: list[int], k: int, keep_empty: bool = False
) -> tuple[list[float], list[int]]:
    """Merges the smallest bin into its smaller neighbour until every bin holds at least k rows (or one is left);
    keep_empty: empty bins stay, as they single out no one.

    edges are the inner edges: bin i is (edges[i-1], edges[i]], the outer bins open-ended."""
    edges, counts = list(edges), list(counts)

    def small(c: int) -> bool:
        return c < k and (c > 0 or not keep_empty)

    while len(counts) > 1 and any(small(c) for c in counts):
        i = min((j for j, c in enumerate(counts) if small(c)), key=lambda j: counts[j])
        j = i - 1 if i == len(counts) - 1 or (i > 0 and counts[i - 1] <= counts[i + 1]) else i + 1
        lo = min(i, j)
        counts[lo : lo + 2] = [counts[lo] + counts[lo + 1]]
        del edges[lo]
    return edges, counts


def bin_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts of non-missing values per bin of the inner edges (bin i: edges[i-1] < x <= edges[i])."""
    x = values[~np.isnan(values)]
    return np.bincount(
        np.searchsorted(np.asarray(edges, dtype=float), x, side="left"), minlength=len(edges) + 1
    ).tolist()


def numeric_reference(values: np.ndarray, bins: int, k: int, outer: bool = False) -> dict:
    """Quantile bins merged until each holds k values, as drift.numeric_drift reads them. outer (an image's per-case
    numbers): the outer edges sit at the extremes and empty bins are kept, so that a spacing or shape every training
    case shares (1 mm pixels) is one bin, and a batch off it on either side lands in a bin of its own."""
    x = values[~np.isnan(values)]
    ref = {
        "kind": "numeric",
        "n": int(len(values)),
        "null_rate": float(np.isnan(values).mean()) if len(values) else 0.0,
    }
    if len(x) < k:  # too few values to describe without singling one out
        return ref | {"edges": [], "counts": [], "suppressed": True}
    if outer:
        quantiles = np.quantile(x, np.arange(0, bins + 1) / bins)
        edges = np.unique([np.nextafter(quantiles[0], -np.inf), *quantiles]).tolist()
    else:
        edges = np.unique(np.quantile(x, np.arange(1, bins) / bins)).tolist()
    edges, counts = merge_small(edges, bin_counts(x, edges), k, keep_empty=outer)
    q1, q2, q3 = np.quantile(x, [0.25, 0.5, 0.75]).tolist()
    return ref | {
        "edges": edges,
        "counts": counts,
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "quartiles": [q1, q2, q3],
    }


def categorical_reference(values: pd.Series, k: int) -> dict:
    present = values[values != MISSING]
    kept, pooled = pool_rare(present.value_counts(), k)
    return {
        "kind": "categorical",
        "n": int(len(values)),
        "null_rate": float((values == MISSING).mean()) if len(values) else 0.0,
        "counts": kept,
        OTHER: pooled if pooled >= k else 0,
    }


def score_reference(score: np.ndarray, threshold: float | None, bins: int, k: int) -> dict:
    """Probability of the positive class (binary) or of the top class: equal-width bins merged to k rows each."""
    edges = (np.arange(1, bins) / bins).tolist()
    edges, counts = merge_small(edges, bin_counts(score, edges), k)
    cut = 0.5 if threshold is None else threshold
    return {
        "rows": int(len(score)),
        "edges": edges,
        "counts": counts,
        "threshold": threshold,
        "predicted_prevalence": float((score >= cut).mean()) if len(score) else None,
    }


def positive_score(proba: np.ndarray) -> np.ndarray:
    """The score monitored: P(positive) (binary), the top class's probability, or a regression's prediction."""
    return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)


def build(train_rows: pd.DataFrame, schema: Schema, scores: np.ndarray, threshold: float | None, bins: int, k: int):
    """The reference of a model: train_rows as the cleaned table holds them, scores on validation + test rows."""
    features = {}
    if schema.kind != "image":
        typed = coerce_features(train_rows, schema)
        for col in schema.numeric:
            features[col] = numeric_reference(typed[col].to_numpy(dtype="float64"), bins, k)
        for col in schema.categorical:
            features[col] = categorical_reference(typed[col], k)
    return {
        "version": VERSION,
        "what": "aggregates of the training split (features) and of validation + test (scores); no rows",
        "small_count": k,
        "train_rows": int(len(train_rows)),
        "classes": schema.classes,
        "features": features,
        # A regression's predictions (no classes) are binned as a numeric feature is, in the target's units.
        "score": score_reference(scores, threshold, bins, k) if schema.classes else numeric_reference(scores, bins, k),
    }


def write(reference: dict, path: Path) -> Path:
    path.write_text(json.dumps(reference, indent=2) + "\n")
    return path


def from_pipeline(params, paths, threshold: float | None) -> dict:
    """The reference of the model in artifacts/train, from the cleaned table and split manifest (register's inputs)."""
    from medflow.data.manifest import load_split
    from medflow.evaluation.heldout import score
    from medflow.models.bundle import Predictor

    df, schema = load_split(paths)
    held_out = df[df[SPLIT].isin(["val", "test"])]
    proba = score(Predictor(paths.model_bundle), paths, held_out, schema.kind)
    k, bins = params.validate_.small_count, params.monitor.bins
    return build(df[df[SPLIT] == "train"], schema, positive_score(proba), threshold, bins, k)
