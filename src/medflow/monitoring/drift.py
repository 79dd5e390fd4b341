"""Drift of a new batch against a stored reference (monitoring/reference.py), from aggregates on both sides.

- PSI (population stability index) over the reference's own bins; every bin of both sides gets half a count so an
  empty bin in a small batch is not read as an infinite shift.
- KS for numeric features is computed from the binned CDFs at the reference's bin edges (the reference keeps no
  rows to rebuild a sample from): the statistic is the largest CDF gap at an edge, never above the exact two-sample
  D, so its p-value (scipy's asymptotic two-sample distribution, as `ks_2samp(method="asymp")` uses) is
  conservative.
- Categories: share shift per reference category; categories the reference does not list (new, or rare there)
  share one "<other>" bin; new category names are shown only when the batch holds at least small_count of them.
- Null rates: the batch's minus the reference's.

A feature has drifted when its shift is both large (PSI >= monitor.psi_threshold) and significant (KS p-value, or a
chi-square test of the category counts, below monitor.ks_pvalue), or when its null rate rose by
monitor.null_rate_change. PSI alone is noisy on small batches, more so when patients have several rows; a test alone
flags trivial shifts in large ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from medflow.data.features import MISSING
from medflow.monitoring.reference import OTHER, bin_counts


def psi(reference: list[int] | np.ndarray, current: list[int] | np.ndarray) -> float:
    r = np.asarray(reference, dtype=float) + 0.5
    c = np.asarray(current, dtype=float) + 0.5
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def binned_ks(reference: list[int], current: list[int]) -> tuple[float, float]:
    """(D, p-value) of the two-sample KS test on binned counts: see the module docstring."""
    r, c = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    en = n * m / (n + m)
    return d, float(stats.kstwo.sf(d, max(1, round(en))))


def chi2_pvalue(reference: list[int], current: list[int]) -> float:
    """Chi-square test that both count vectors come from one distribution (bins empty on both sides left out)."""
    table = np.array([reference, current], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)


def numeric_drift(ref: dict, values: np.ndarray, mp) -> dict:
    null_rate = float(np.isnan(values).mean()) if len(values) else 0.0
    out = {"kind": "numeric", "null_rate": null_rate, "null_rate_change": null_rate - ref["null_rate"]}
    x = values[~np.isnan(values)]
    if ref.get("suppressed") or not len(x):
        return out | {
            "psi": None,
            "ks": None,
            "ks_pvalue": None,
            "drifted": out["null_rate_change"] >= mp.null_rate_change,
        }
    current = bin_counts(x, ref["edges"])
    d, p = binned_ks(ref["counts"], current)
    out |= {"psi": psi(ref["counts"], current), "ks": d, "ks_pvalue": p, "mean": float(x.mean())}
    out["mean_shift_sd"] = (out["mean"] - ref["mean"]) / ref["sd"] if ref.get("sd") else None
    out["drifted"] = bool(
        (out["psi"] >= mp.psi_threshold and p < mp.ks_pvalue) or out["null_rate_change"] >= mp.null_rate_change
    )
    return out


def categorical_drift(ref: dict, values: pd.Series, mp, k: int) -> dict:
    null_rate = float((values == MISSING).mean()) if len(values) else 0.0
    present = values[values != MISSING].astype(str)
    known = list(ref["counts"])
    counts = present.value_counts()
    current = [int(counts.get(c, 0)) for c in known] + [int(counts[~counts.index.isin(known)].sum())]
    reference = [ref["counts"][c] for c in known] + [ref[OTHER]]
    n_ref, n_cur = max(sum(reference), 1), max(sum(current), 1)
    bins = zip([*known, OTHER], reference, current, strict=True)
    shares = {c: {"reference": r / n_ref, "batch": b / n_cur} for c, r, b in bins}
    new = sorted(str(c) for c, n in counts.items() if c not in ref["counts"] and n >= k)
    out = {
        "kind": "categorical",
        "null_rate": null_rate,
        "null_rate_change": null_rate - ref["null_rate"],
        "psi": psi(reference, current),
        "chi2_pvalue": chi2_pvalue(reference, current),
        "max_share_shift": max(abs(s["batch"] - s["reference"]) for s in shares.values()),
        "shares": shares,
        "new_categories": new,
    }
    large = out["psi"] >= mp.psi_threshold and out["chi2_pvalue"] < mp.ks_pvalue
    out["drifted"] = bool(large or out["null_rate_change"] >= mp.null_rate_change)
    return out


def score_drift(ref: dict, score: np.ndarray, mp) -> dict:
    cut = 0.5 if ref["threshold"] is None else ref["threshold"]
    current = bin_counts(score, ref["edges"])
    prevalence = float((score >= cut).mean()) if len(score) else None
    out = {
        "rows": int(len(score)),
        "psi": psi(ref["counts"], current) if len(score) else None,
        "chi2_pvalue": chi2_pvalue(ref["counts"], current) if len(score) else None,
        "predicted_prevalence": prevalence,
        "reference_predicted_prevalence": ref["predicted_prevalence"],
        "counts": current,
    }
    out["drifted"] = bool(
        out["psi"] is not None and out["psi"] >= mp.psi_threshold and out["chi2_pvalue"] < mp.ks_pvalue
    )
    return out


def decide(report: dict, mp) -> list[str]:
    """Why the model should be retrained on this batch (empty: it should not)."""
    if report["rows"] < mp.min_rows:
        return []
    why = []
    drifted = [c for c, f in report["features"].items() if f["drifted"]]
    if drifted and len(drifted) >= mp.min_drifted_features:
        why.append(f"{len(drifted)} feature(s) drifted ({', '.join(drifted)})")
    if report["score"]["drifted"]:
        why.append(f"prediction drift (score PSI {report['score']['psi']:.3f} >= {mp.psi_threshold})")
    perf = report.get("performance")
    floor = mp.performance_floor
    if perf and floor is not None and perf.get("lower_is_better"):
        # A ceiling for a metric better lower: retrain when even the lower bound lies above it.
        if perf.get("ci_low") is not None and perf["ci_low"] > floor:
            why.append(
                f"{perf['metric']} {perf['value']:.3f} (95% CI lower bound {perf['ci_low']:.3f}) above the ceiling "
                f"{floor} (monitor.performance_floor)"
            )
    elif perf and floor is not None and perf.get("ci_high") is not None and perf["ci_high"] < floor:
        why.append(
            f"{perf['metric']} {perf['value']:.3f} (95% CI upper bound {perf['ci_high']:.3f}) below the floor {floor}"
        )
    return why


def cell(x, fmt: str = ".3f") -> str:
    """A statistic as a report's table cell: blank where it is undefined (None, NaN)."""
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)
