"""Development against evaluation data, as TRIPOD+AI item 20c asks: each feature and the outcome summarised in the
development rows (train and validation) and in the evaluation rows (test) by `tableone` (Pollard et al., JAMIA Open
2018): mean (SD) or n (%), the missing count and the standardised mean difference between the two.

Aggregates only: a category held by fewer than small_count rows of either group shows "<small_count" there, and a
group smaller than small_count gets no table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data.columns import LABEL, SPLIT, TIME
from medflow.data.features import Schema

DEVELOPMENT, EVALUATION = "development", "evaluation"
GROUP = "_data"
# A table of 2,000 features is no card: the first ones in the table's order, the count of the rest said.
SHOWN = 60


def _outcome(df: pd.DataFrame, schema: Schema) -> tuple[dict[str, pd.Series], list[str]]:
    """The outcome as columns of the table, and which of them are categories."""
    if TIME in df:
        event = pd.Series(np.where(df[LABEL].to_numpy() > 0, "event", "censored"), index=df.index)
        return {"outcome (event)": event, "follow-up": df[TIME]}, ["outcome (event)"]
    if schema.classes:
        names = np.asarray(schema.classes, dtype=object)[df[LABEL].to_numpy()]
        return {"outcome": pd.Series(names, index=df.index)}, ["outcome"]
    return {"outcome": df[LABEL]}, []


def _decimals(values: pd.Series) -> int:
    """Decimals that show a column's spread with about three significant digits (0.098 (0.014), not 0.1 (0.0))."""
    spread = float(pd.to_numeric(values, errors="coerce").std())
    if not np.isfinite(spread) or spread <= 0:
        return 1
    return int(np.clip(2 - np.floor(np.log10(spread)), 1, 6))


def development_vs_evaluation(df: pd.DataFrame, schema: Schema, small_count: int) -> dict | None:
    """df: the cleaned table with its split (data.manifest.load_split). None where a group is too small to show."""
    from tableone import TableOne

    group = pd.Series(np.where(df[SPLIT] == "test", EVALUATION, DEVELOPMENT), index=df.index)
    sizes = group.value_counts()
    if sizes.get(DEVELOPMENT, 0) < small_count or sizes.get(EVALUATION, 0) < small_count:
        return None
    features = [c for c in schema.features if c in schema.numeric or c in schema.categorical]
    shown = features[:SHOWN]
    outcome, outcome_categories = _outcome(df, schema)
    frame = pd.DataFrame({**{c: df[c] for c in shown}, **outcome, GROUP: group})
    categorical = [c for c in shown if c in schema.categorical] + outcome_categories
    for col in categorical:  # tableone names a level by its text; a missing one stays missing
        frame[col] = frame[col].astype("string").astype(object).where(frame[col].notna(), None)
    columns = [*outcome, *shown]
    table = TableOne(
        frame, columns=columns, categorical=categorical, groupby=GROUP, missing=True, overall=False, smd=True,
        pval=False, order={GROUP: [DEVELOPMENT, EVALUATION]}, label_suffix=False,
        decimals={c: _decimals(frame[c]) for c in columns if c not in categorical},
    ).tableone  # fmt: skip
    table.columns = [c[-1] for c in table.columns]
    smd = next(c for c in table.columns if c.startswith("SMD"))
    counts = {col: frame.groupby(GROUP)[col].value_counts() for col in categorical}
    rows = []
    for (name, level), cells in table.iterrows():
        if name == "n":
            continue
        variable = name
        row = {"variable": variable, "level": level or None, "summary": "n (%)" if variable in counts else "mean (SD)"}
        for side in (DEVELOPMENT, EVALUATION):
            value = str(cells[side]).strip()
            if variable in counts and level:
                n = int(counts[variable].get((side, level), 0))
                value = value if n >= small_count or n == 0 else f"<{small_count}"
            row[side] = value
        row["missing"] = str(cells["Missing"]).strip() or None
        row["smd"] = str(cells[smd]).strip() or None
        rows.append(row)
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
        f"{found['method']}. A category of fewer than the small count of rows shows as <n.",
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
