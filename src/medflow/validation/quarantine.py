"""Which rows are quarantined and why, what may leave validate (features and the target; the patient id only as
its salted key), and the report of every expectation's outcome: counts and row ids, never a value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data.checks import Check
from medflow.data.columns import PATIENT_KEY, ROW_ID
from medflow.data.numbers import Parsed
from medflow.data.suite import suite_kinds
from medflow.params import DataParams, ValidateParams
from medflow.privacy.keys import pseudonymise


def batch_failures(checks: list[Check]) -> list[str]:
    return [f"{c.type}: {c.column + ': ' if c.column else ''}{c.detail}" for c in checks if c.stops]


def quarantine(df: pd.DataFrame, checks: list[Check]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits df into valid rows and quarantined rows (ROW_ID, reason, original columns), one per row."""
    reasons: dict[int, list[str]] = {}
    for c in checks:
        if c.level == "row":
            for rid in c.row_ids:
                reasons.setdefault(rid, []).append(c.reason)
    bad = df[ROW_ID].isin(reasons)
    held = df[bad].copy()
    held.insert(0, "reason", ["; ".join(reasons[r]) for r in held[ROW_ID]])
    cols = [ROW_ID, "reason", *(c for c in df.columns if c != ROW_ID)]
    return df[~bad], held[cols]


def report(checks: list[Check], failures: list[str]) -> dict:
    return {
        "success": not failures,
        "batch_failures": failures,
        "expectations": [
            {
                "type": c.type,
                "column": c.column,
                "level": c.level,
                "success": c.success,
                "unexpected_count": c.unexpected_count,
            }
            for c in checks
        ],
    }


def patient_key(ids: pd.Series, salt: str | None) -> pd.Series:
    """The salted patient key; missing where the id is missing (such rows are quarantined)."""
    return pseudonymise(ids, salt or "").where(ids.notna())


def _written_columns(kinds: dict[str, str]) -> list[str]:
    """What may leave validate: features and the target. Identifiers, free text and dates never do; the patient
    id leaves only as its salted key."""
    return [c for c, k in kinds.items() if k in ("numeric", "categorical", "target")]


def held_columns(kinds: dict[str, str], keep: list[str]) -> list[str]:
    """What quarantine.csv holds: the row number (which finds the row in the source), the reason, the salted key and
    the numeric columns. Never the text of another column: a category a suite did not know may be a name or a note
    that got past every screen, and the reason names its column and rule."""
    return [ROW_ID, "reason", *(c for c in keep[1:] if c == PATIENT_KEY or kinds.get(c) == "numeric")]


def kinds_of(
    suite: dict, columns: pd.Index, data: DataParams, split_by: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """The kind of each column (in file order, for people reading the profile) and the columns valid.parquet holds:
    with split_by (split.by=time or site), that column too, whatever its kind (an admission date is "text"), for
    clean to turn into the split's number or site and drop."""
    known = suite_kinds(suite)
    kinds = {c: known[c] for c in columns if c in known}
    keep = [ROW_ID, *_written_columns(kinds)]
    if split_by in kinds and split_by not in keep:
        keep.append(split_by)
    if data.patient_id:
        keep.insert(1, PATIENT_KEY)
    return kinds, keep


def not_features(kinds: dict[str, str], parsed: Parsed, vp: ValidateParams) -> dict[str, str]:
    """Why each text column is no feature; a column of mostly numbers says how many values are not (never which)."""
    why = {}
    for col in (c for c, k in kinds.items() if k == "text"):
        given, numbers = int(parsed.present.get(col, 0)), parsed.count(col) if col in parsed.df else 0
        if given and numbers >= given / 2:
            why[col] = (
                f"{given - numbers} of {given} values are not numbers (validate.type_mostly={vp.type_mostly:g}): read "
                "as text; write them as numbers, or as a missing word such as NA"
            )
        else:
            why[col] = "free text or dates"
    return why


def groupable(
    frame: pd.DataFrame, kinds: dict[str, str], parsed: Parsed, numeric_target: bool = False
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The columns a quarantine could select patients by: numbers (as parsed) and categories, the target's too (a
    number when numeric_target: a regression's)."""
    number_kinds = ("numeric", "target") if numeric_target else ("numeric",)
    numeric = [c for c, k in kinds.items() if k in number_kinds and c in frame]
    x = parsed.matrix(numeric, frame.index)
    return {c: x[:, j] for j, c in enumerate(numeric)}, [
        c for c, k in kinds.items() if k in ("categorical", "target") and c in frame and c not in numeric
    ]
