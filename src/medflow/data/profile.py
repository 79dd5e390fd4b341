"""A data profile made of aggregates only: read by people, it may be attached to reviews and model cards.

Counts below `small_count` are shown as "<k" so that no small group can be singled out, and categories with fewer
rows are pooled as "<other>", unnamed; identifier, patient id and free-text/date columns show only their name, kind
and missingness.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.events import event_flags
from medflow.data.features import OTHER, pool_rare
from medflow.params import DataParams, ValidateParams

_QUANTILES = {"p1": 0.01, "p25": 0.25, "median": 0.5, "p75": 0.75, "p99": 0.99}


def shown(count: int, small: int) -> str:
    # Zero is shown: it singles nobody out.
    return f"<{small}" if 0 < count < small else str(count)


def univariate_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC of one score against a boolean label, as max(AUC, 1 - AUC): direction does not matter here."""
    pos = int(y.sum())
    neg = len(y) - pos
    if not pos or not neg:
        return None
    ranks = pd.Series(score).rank().to_numpy()
    auc = (ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg)
    return float(max(auc, 1 - auc))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of each column of x (1 = smallest), tied values sharing their average rank, as pandas' rank(axis=0);
    missing values rank after every value (their ranks are not used). One argsort for the whole matrix."""
    n, m = x.shape
    if not n:
        return np.empty((0, m))
    cols = np.ascontiguousarray(x.T)  # one row per column: a tie group never spans two of them
    order = np.argsort(cols, axis=1)  # NaN last
    xs = np.take_along_axis(cols, order, axis=1)
    starts = np.ones((m, n), dtype=bool)
    starts[:, 1:] = xs[:, 1:] != xs[:, :-1]
    flat = starts.ravel()
    first = np.flatnonzero(flat)
    last = np.append(first[1:], flat.size) - 1
    mean_rank = (first % n + last % n) / 2 + 1
    ranks = np.empty((m, n))
    np.put_along_axis(ranks, order, mean_rank[np.cumsum(flat) - 1].reshape(m, n), axis=1)
    return ranks.T


def univariate_aucs(x: np.ndarray, y: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """univariate_auc of every column of x at once (missing values left out column by column); NaN where a column
    has no value of one class. ranks: average_ranks(x), computed once for every label of the same x."""
    ok = ~np.isnan(x)
    ranks = average_ranks(x) if ranks is None else ranks
    hit = ok & y[:, None]
    pos = hit.sum(axis=0).astype(float)
    neg = ok.sum(axis=0) - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (np.where(hit, ranks, 0.0).sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    auc = np.maximum(auc, 1 - auc)
    auc[(pos == 0) | (neg == 0)] = np.nan
    return auc


def numeric_associations(x: pd.DataFrame, labels: pd.Series, positives: list[str]) -> dict[str, float | None]:
    """association() of every numeric column of x (floats), vectorised."""
    if x.shape[1] == 0:
        return {}
    best = np.full(x.shape[1], np.nan)
    values = x.to_numpy(dtype="float64")
    ranks = average_ranks(values)
    for p in positives:
        best = np.fmax(best, univariate_aucs(values, (labels == p).to_numpy(dtype=bool), ranks))
    return {c: None if np.isnan(a) else round(float(a), 4) for c, a in zip(x.columns, best, strict=True)}


def association(x: pd.Series, kind: str, labels: pd.Series, positives: list[str]) -> float | None:
    if kind == "categorical":
        # The target rate of each category is the score: the AUC of the best single-column lookup table.
        x = x.fillna("<missing>")
    keep = x.notna()
    x, labels = x[keep], labels[keep]
    aucs = []
    for p in positives:
        y = (labels == p).to_numpy()
        score = pd.Series(y, index=x.index).groupby(x).transform("mean") if kind == "categorical" else x
        aucs.append(univariate_auc(y, score.to_numpy(dtype=float)))
    aucs = [a for a in aucs if a is not None]
    return round(max(aucs), 4) if aucs else None


def positives(classes: list[str], data: DataParams) -> list[str]:
    """The target values scored as positive: data.positive_class as the target spells it; without one, the second
    of two classes, or each of more."""
    if data.positive_class is not None:
        return [data.positive_label(classes) or str(data.positive_class)]
    return classes[1:] if len(classes) == 2 else classes


def build_profile(df: pd.DataFrame, kinds: dict[str, str], data: DataParams, vp: ValidateParams) -> dict:
    """df with numeric columns parsed to floats (see suite.typed) -> a JSON-able dict of aggregates."""
    k = vp.small_count
    n = len(df)
    labels = df[data.target].astype("string")
    classes = sorted(labels.dropna().unique())
    # A regression target has no classes to score features against, and its values are no categories to count.
    regression = data.task == "regression"
    positive = [] if regression else positives(classes, data)
    numeric = [c for c, kind in kinds.items() if kind == "numeric"]
    x = df[numeric].astype("float64")
    aucs = numeric_associations(x, labels.fillna(""), positive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column has no quantiles
        quantiles = np.nanquantile(x.to_numpy(), list(_QUANTILES.values()), axis=0) if numeric and n else None
    missing_counts = df[list(kinds)].isna().sum()
    columns = []
    for col, kind in kinds.items():
        missing = int(missing_counts[col])
        entry: dict = {"name": col, "kind": kind, "missing": shown(missing, k)}
        entry["missing_rate"] = round(missing / n, 4) if n and not 0 < missing < k else None
        if kind == "numeric":
            q = quantiles[:, numeric.index(col)] if quantiles is not None else [np.nan] * len(_QUANTILES)
            entry["quantiles"] = {name: float(f"{v:.4g}") for name, v in zip(_QUANTILES, q, strict=True)}
            entry["association"] = aucs[col]
        if kind == "categorical":
            common, rare = pool_rare(df[col].value_counts(), k)
            entry["counts"] = {v: shown(c, k) for v, c in common.items()} | ({OTHER: shown(rare, k)} if rare else {})
            entry["association"] = association(df[col], kind, labels, positive)
        columns.append(entry)
    counts = labels.value_counts()
    if regression:
        number = pd.to_numeric(labels, errors="coerce")
        counts = pd.Series({"numbers": int(number.notna().sum()), "missing": int(number.isna().sum())})
    censoring = {}
    if data.task == "survival":
        # The share of rows censored, withheld as missing_rate is where it would reveal a count under k.
        censored = int((~event_flags(df[data.target], data.event_value)).sum())
        censoring["censored_rate"] = (
            round(censored / n, 4) if n and not (0 < censored < k or 0 < n - censored < k) else None
        )
    leaks = [c["name"] for c in columns if (c.get("association") or 0) >= vp.leakage_auc]
    return {
        "rows": n,
        "small_count": k,
        "leakage_auc": vp.leakage_auc,
        "columns": columns,
        "target": {
            "name": data.target,
            "positive_class": positive[0] if data.positive_class is not None else None,
            "counts": {str(v): shown(int(c), k) for v, c in counts.items()},
            **({"quantiles": _target_quantiles(number)} if regression else {}),
            **censoring,
        },
        "leakage_suspects": leaks,
    }


def _target_quantiles(number: pd.Series) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no number at all: no quantiles
        q = np.nanquantile(number.to_numpy(dtype="float64"), list(_QUANTILES.values()))
    return {name: float(f"{v:.4g}") for name, v in zip(_QUANTILES, q, strict=True)}


def _cell(x: object) -> str:
    return "" if x is None else str(x).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows] + [""]


def _scored(cols: list[dict]) -> list[dict]:
    return sorted((c for c in cols if c.get("association") is not None), key=lambda c: -c["association"])


def to_markdown(profile: dict, title: str) -> str:
    k, cols, tgt = profile["small_count"], profile["columns"], profile["target"]
    out = [
        f"# Data profile: {title}",
        "",
        f"{profile['rows']} rows"
        + (f" (a uniform sample of the {profile['sample_of']} valid rows)" if "sample_of" in profile else "")
        + f", {len(cols)} columns. Aggregates only: counts below {k} are shown as <{k}; "
        "identifier, patient id and text/date columns show their missingness only.",
        "",
        "## Columns",
        "",
    ]
    rate = [None if c["missing_rate"] is None else f"{c['missing_rate']:.1%}" for c in cols]
    out += _table(
        ["column", "kind", "missing", "missing %"],
        [[c["name"], c["kind"], c["missing"], r] for c, r in zip(cols, rate, strict=True)],
    )
    numeric = [c for c in cols if "quantiles" in c]
    if numeric:
        out += ["## Numeric columns", ""]
        out += _table(["column", *_QUANTILES], [[c["name"], *c["quantiles"].values()] for c in numeric])
    for c in (c for c in cols if "counts" in c):
        out += [f"## Categories of {c['name']}", ""]
        out += _table(["value", "rows"], list(c["counts"].items()))
    out += [f"## Target: {tgt['name']}", ""]
    if tgt["positive_class"] is not None:
        out += [f"Positive class: {tgt['positive_class']}.", ""]
    if "censored_rate" in tgt:
        rate = tgt["censored_rate"]
        out += [
            f"Censored (no event seen by the end of follow-up): {'<k rows' if rate is None else f'{rate:.1%}'}.",
            "",
        ]
    out += _table(["value", "rows"], list(tgt["counts"].items())) + ["![target](target.png)", ""]
    scored = _scored(cols)
    out += [
        "## Association with the target",
        "",
        "ROC-AUC of each feature alone, max(AUC, 1 - AUC); a category scores its rows' target rate.",
        "",
    ]
    out += _table(["feature", "AUC"], [[c["name"], f"{c['association']:.3f}"] for c in scored])
    out += ["![association](association.png)", "", "## Suspected leakage", ""]
    if profile["leakage_suspects"]:
        out += [
            f"- {c['name']}: AUC {c['association']:.3f} >= {profile['leakage_auc']}"
            for c in scored
            if c["name"] in profile["leakage_suspects"]
        ]
        out += ["", "One feature this predictive is usually a copy of the label, or recorded after it."]
    else:
        out.append(f"None: no feature reaches AUC {profile['leakage_auc']}.")
    out += ["", "![missingness](missingness.png)", ""]
    return "\n".join(out)


def save_figures(profile: dict, folder: Path) -> None:
    for name, fig in figures(profile).items():
        fig.savefig(folder / name, dpi=80)


def figures(profile: dict) -> dict:
    """{file name: matplotlib Figure}; Figure objects need no pyplot and no global backend."""
    from matplotlib.figure import Figure

    cols = profile["columns"]
    figs = {}

    # The 40 columns missing most: a wide table's full list would be a picture nobody can read (and slow to draw).
    shown_cols = sorted(cols, key=lambda c: -(c["missing_rate"] or 0))[:40] if len(cols) > 40 else cols
    fig = Figure(figsize=(6, 0.25 * len(shown_cols) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([c["name"] for c in shown_cols], [c["missing_rate"] or 0 for c in shown_cols])
    ax.invert_yaxis()
    more = f", {len(shown_cols)} of {len(cols)} columns" if len(shown_cols) < len(cols) else ""
    ax.set_xlabel(f"missing share (suppressed small counts drawn as 0{more})")
    figs["missingness.png"] = fig

    tgt = profile["target"]
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    names = list(tgt["counts"])
    heights = [int(v) if v.isdigit() else 0 for v in tgt["counts"].values()]
    ax.bar(names, heights)
    ax.bar_label(ax.containers[0], labels=list(tgt["counts"].values()))
    ax.margins(y=0.12)
    ax.set_title(f"{tgt['name']} (rows)")
    figs["target.png"] = fig

    scored = _scored(cols)[:25]
    fig = Figure(figsize=(6, 0.25 * len(scored) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([c["name"] for c in scored], [c["association"] for c in scored])
    ax.axvline(profile["leakage_auc"], color="red", linestyle="--", label="leakage threshold")
    ax.set_xlim(0.5, 1.0)
    ax.invert_yaxis()
    ax.set_xlabel("univariate ROC-AUC")
    ax.legend(loc="lower right")
    figs["association.png"] = fig
    return figs
