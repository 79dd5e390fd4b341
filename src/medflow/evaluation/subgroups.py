"""Test metrics per subgroup (a categorical column's values, a numeric column's bins), with patient-bootstrap CIs.

A group with fewer than min_patients patients is suppressed: its size is shown as "<k", none of its metrics are
computed, and a category's small groups share one row named "<other>", so no report, card or plot can single out a
handful of patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data.features import OTHER
from medflow.evaluation.metrics import bootstrap_ci, weighted_metrics

MISSING = "missing"


def _edge(v: float) -> str:
    return f"{v:g}"


def group_labels(table: pd.DataFrame, columns: list[str], bins: dict[str, list[float]]) -> dict[str, pd.Categorical]:
    """One label per row for each subgroup column; numeric columns need bin edges (bins[col]), cut as [a, b).

    Bins keep their numeric order in reports (a plain column's values are sorted); missing values come last.
    """
    out = {}
    for col in columns:
        if col not in table:
            raise ValueError(
                f"evaluate.subgroups: {col!r} is not a feature of the cleaned table; it has {sorted(table.columns)}"
            )
        values = table[col]
        if col in bins:
            edges = sorted(bins[col])
            names = [f"{col}<{_edge(edges[0])}"]
            names += [f"{_edge(a)}<={col}<{_edge(b)}" for a, b in zip(edges, edges[1:], strict=False)]
            names.append(f"{col}>={_edge(edges[-1])}")
            codes = pd.cut(pd.to_numeric(values), [-np.inf, *edges, np.inf], right=False, labels=False)
            labels = pd.Categorical([MISSING if pd.isna(c) else names[int(c)] for c in codes], [*names, MISSING])
        elif pd.api.types.is_numeric_dtype(values) and values.nunique() > 20:
            raise ValueError(f"evaluate.subgroups: {col!r} is numeric; give its bin edges in evaluate.subgroup_bins")
        else:
            # A code read as a number (sex 1 or 2) is named as written, "sex=1", not "sex=1.0".
            named = [MISSING if pd.isna(v) else f"{col}={_edge(v) if isinstance(v, float) else v}" for v in values]
            labels = pd.Categorical(named, [*sorted(set(named) - {MISSING}), MISSING])
        out[col] = labels
    return out


def subgroup_report(
    y: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray | None,
    labels: dict[str, pd.Categorical | np.ndarray],
    primary: str,
    min_patients: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
    task=None,
) -> dict:
    """Rows per group (suppressed ones as "<k"), the worst shown group on the primary metric, the largest gap.

    y, proba: class indices and probabilities; or, given a task without classes (tasks/), its outcome and outputs,
    the primary metric then the task's own estimate (MAE, Harrell's C) and "worst" in the metric's direction."""
    patients = groups if groups is not None else np.arange(len(y)).astype(str)
    by_task = task is not None and not task.has_classes
    higher = task is None or task.higher_is_better(primary)
    shown_keys = [primary] if by_task else [primary, "sensitivity", "specificity"]
    rows, gaps = [], {}
    for col, lab in labels.items():
        values = []
        lab = pd.Categorical(lab)
        for name in lab.categories:
            mask = np.asarray(lab == name)
            if not mask.any():
                continue
            n_patients = len(np.unique(patients[mask]))
            row: dict = {"column": col, "group": name}
            if n_patients < min_patients:
                # A small category is not named either (a rare value singles out its patients): one pooled row.
                if name.startswith(f"{col}="):
                    row["group"] = f"{col}={OTHER}"
                if row["group"] != name and any(r["group"] == row["group"] for r in rows):
                    continue
                rows.append({**row, "patients": f"<{min_patients}", "suppressed": True})
                continue
            ys, ps, gs = y[mask], proba[mask], None if groups is None else groups[mask]
            if by_task:
                value, lo, hi = task.estimate(primary, ys, ps, gs, n_boot, seed)
                point, ci = {primary: [value]}, {primary: (lo, hi)}
            else:
                point = weighted_metrics(ys, ps, np.ones((1, mask.sum())), threshold)
                ci = bootstrap_ci(ys, ps, gs, n_boot, seed, threshold)
            row |= {"patients": n_patients, "rows": int(mask.sum()), "suppressed": False}
            for k in shown_keys:
                if k in point and not np.isnan(point[k][0]):
                    row[k] = float(point[k][0])
                    row[f"{k}_ci_low"], row[f"{k}_ci_high"] = ci[k]
            rows.append(row)
            if primary in row:
                values.append(row[primary])
        if len(values) >= 2:
            gaps[col] = max(values) - min(values)
    shown = [r for r in rows if primary in r]
    worst = (min if higher else max)(shown, key=lambda r: r[primary]) if shown else None
    return {
        "primary_metric": primary,
        **({} if higher else {"lower_is_better": True}),
        "min_patients": min_patients,
        "groups": rows,
        "worst": None if worst is None else {"group": worst["group"], primary: worst[primary]},
        "gap_by_column": gaps,
        "largest_gap": max(gaps.values()) if gaps else None,
    }
