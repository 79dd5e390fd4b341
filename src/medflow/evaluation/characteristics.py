"""Development against evaluation data, as TRIPOD+AI item 20c asks: each feature and the outcome summarised in the
development rows (train and validation) and in the evaluation rows (test) by `tableone` (Pollard et al., JAMIA Open
2018): mean (SD) or n (%), the missing count and the standardised mean difference between the two.

Aggregates only: a category's levels held by fewer than small_count rows of a group are merged into OTHER; where a
level is still that rare in a group, the variable is suppressed in that group (its counts would follow from the
others'); a number with fewer than small_count values in a group is suppressed; a group that small gets no table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data.columns import LABEL, SPLIT, TIME
from medflow.data.features import OTHER, Schema

DEVELOPMENT, EVALUATION = "development", "evaluation"
# A table of 2,000 features is no card: the first ones (numeric, then categorical, as the schema lists them), the
# count of the rest said; a category's most frequent levels, the rest as OTHER.
SHOWN = 60
LEVELS = 10


def _outcome(df: pd.DataFrame, schema: Schema) -> list[tuple[str, pd.Series, bool]]:
    """The outcome as (name, values, categorical) variables."""
    if TIME in df:
        event = pd.Series(np.where(df[LABEL].to_numpy() > 0, "event", "censored"), index=df.index)
        return [("outcome (event)", event, True), ("follow-up", df[TIME], False)]
    if schema.classes:
        return [("outcome", pd.Series(np.asarray(schema.classes, dtype=object)[df[LABEL].to_numpy()], index=df.index),
                 True)]  # fmt: skip
    return [("outcome", df[LABEL], False)]


def _decimals(values: pd.Series) -> int:
    """Decimals that show a column's spread with about three significant digits (0.098 (0.014), not 0.1 (0.0))."""
    spread = float(pd.to_numeric(values, errors="coerce").std())
    if not np.isfinite(spread) or spread <= 0:
        return 1
    return int(np.clip(2 - np.floor(np.log10(spread)), 1, 6))


def _levels(values: pd.Series, group: pd.Series, small: int) -> tuple[pd.Series, set[str]]:
    """A category as text, its levels held by fewer than `small` rows of a group (and past the LEVELS most frequent)
    merged into OTHER, so that no rare value is named; and the groups where a level (OTHER too) is still that rare,
    whose counts the others would give away by subtraction."""
    text = values.astype("string").fillna("<missing>").astype(object)
    counts = pd.crosstab(text, group)
    rare = ((counts > 0) & (counts < small)).any(axis=1)
    common = counts[~rare].sum(axis=1).sort_values(ascending=False).index[: LEVELS - 1]
    text = text.where(text.isin(common), OTHER)
    merged = pd.crosstab(text, group)
    return text, {g for g in merged.columns if ((merged[g] > 0) & (merged[g] < small)).any()}


def development_vs_evaluation(df: pd.DataFrame, schema: Schema, small_count: int) -> dict | None:
    """df: the cleaned table with its split (data.manifest.load_split). None where a group is too small to show."""
    from tableone import TableOne

    group = pd.Series(np.where(df[SPLIT] == "test", EVALUATION, DEVELOPMENT), index=df.index)
    sizes = group.value_counts()
    if sizes.get(DEVELOPMENT, 0) < small_count or sizes.get(EVALUATION, 0) < small_count:
        return None
    features = [c for c in schema.features if c in schema.numeric or c in schema.categorical]
    shown = features[:SHOWN]
    variables = _outcome(df, schema) + [(c, df[c], c in schema.categorical) for c in shown]
    # tableone's columns by position: a feature may be named like the outcome or hold tableone's own words.
    frame, names, categorical, hidden, few = pd.DataFrame({"group": group}), {}, [], {}, []
    for i, (name, values, is_category) in enumerate(variables):
        key = f"v{i}"
        names[key] = name
        number = None if is_category else pd.to_numeric(values, errors="coerce")
        # A 0/1 flag's mean is a count (0.0042 of 240 rows is one patient): two values are counted as a category.
        if number is None or number.nunique() <= 2:
            frame[key], hidden[key] = _levels(values, group, small_count)
            categorical.append(key)
            continue
        if number.notna().groupby(group).sum().reindex(sizes.index, fill_value=0).min() < small_count:
            few.append(key)  # a mean of a few values gives them away, and has no SMD
        else:
            frame[key] = number
    columns = [k for k in names if k in frame]
    table = TableOne(
        frame, columns=columns, categorical=categorical, groupby="group", missing=True, overall=False, smd=True,
        pval=False, order={"group": [DEVELOPMENT, EVALUATION]}, label_suffix=False,
        decimals={k: _decimals(frame[k]) for k in columns if k not in categorical},
    ).tableone  # fmt: skip
    table.columns = [c[-1] for c in table.columns]
    smd = next(c for c in table.columns if c.startswith("SMD"))
    rows = []
    for (key, level), cells in table.iterrows():
        if key == "n":
            continue
        summary = "n (%)" if key in categorical else "mean (SD)"
        row = {"variable": names[key], "level": level or None, "summary": summary}
        for side in (DEVELOPMENT, EVALUATION):
            row[side] = "suppressed" if side in hidden.get(key, ()) else str(cells[side]).strip()
        missing, difference = str(cells["Missing"]).strip(), str(cells[smd]).strip()
        if missing not in ("", "0") and int(missing) < small_count:
            missing = f"<{small_count}"
        row["missing"] = missing or None
        row["smd"] = None if hidden.get(key) or difference in ("", "nan") else difference
        rows.append(row)
    for key in few:
        row = {"variable": names[key], "level": None, "summary": f"fewer than {small_count} values in a group"}
        rows.append(row | {DEVELOPMENT: "suppressed", EVALUATION: "suppressed", "missing": None, "smd": None})
    return {
        "method": "tableone: mean (SD) or n (%) per group, standardised mean difference (SMD) between them",
        "groups": {DEVELOPMENT: int(sizes[DEVELOPMENT]), EVALUATION: int(sizes[EVALUATION])},
        "features": len(features),
        "shown": len(shown),
        "rows": rows,
    }


def markdown(found: dict) -> list[str]:
    """The table as the card and evaluate's report show it."""
    g = found["groups"]
    lines = [
        f"Development (train and validation, {g[DEVELOPMENT]} rows) against evaluation (test, {g[EVALUATION]} rows); "
        f"{found['method']}. Categories of few rows are merged into {OTHER}, or suppressed with their variable.",
        "",
        "| variable | | development | evaluation | missing | SMD |",
        "|---|---|---|---|---|---|",
    ]
    for r in found["rows"]:
        what = r["level"] if r["level"] is not None else r["summary"]
        lines.append(
            f"| {r['variable']} | {what} | {r['development']} | {r['evaluation']} | {r['missing'] or ''} | "
            f"{r['smd'] or ''} |"
        )
    if found["shown"] < found["features"]:
        lines += ["", f"The first {found['shown']} of {found['features']} features; validate's profile has all."]
    return lines
