"""The expectation suite of a dataset: inferred once from reference data, then reviewed and edited by people.

The suite is stored as Great Expectations 1.x ExpectationSuite JSON and committed to git, so it holds column
names, ranges, category and label sets, rates and counts, never a value of an identifier, patient id or
free-text/date column. Running it on a table is checks.py's job.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medflow.data.columns import ROW_ID
from medflow.data.features import OTHER, pool_rare
from medflow.data.numbers import NUMBER_REGEX, Parsed
from medflow.params import DataParams, ValidateParams

# Dates are patient data (HIPAA counts them as identifiers), so a date column never gets a category set.
# A prefix match: whatever follows a date (seconds, a time zone) does not make it less of a date.
DATE_REGEX = r"^\s*(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
ROLE_KINDS = ("target", "patient_id", "identifier")
# How validate reads a table (ValidateParams), not what it infers from it.
STREAMING = ("stream_above_mb", "chunk_rows", "sample_rows")

NOTES = (
    "Inferred by medflow from reference data; review and edit by hand. meta.level 'batch': a failure stops "
    "the run. meta.level 'row': failing rows are quarantined with a reason, and the run stops only if fewer "
    "than `mostly` of the rows pass. A category set holding '<other>' admits any value outside it: the reference's "
    "values rarer than validate.small_count are pooled under that name, never named (remove it to close the set). "
    "Numeric columns are checked as numbers (text that does not parse counts "
    "as missing) except by match_regex and not_be_null, which see the text. meta.medflow records the column "
    "kinds (used by the clean step) and reference statistics; delete this file to infer it again."
)


class ValidationFailed(ValueError):
    pass


def _share(values: pd.Series, regex: str) -> float:
    return float(values.astype(str).str.contains(regex, regex=True).mean()) if len(values) else 0.0


def roles(data: DataParams) -> dict[str, str]:
    # Later keys win: a column named both target and identifier is the target.
    out = dict.fromkeys(data.identifiers, "identifier")
    if data.patient_id:
        out[data.patient_id] = "patient_id"
    return out | {data.target: "target"}


def column_kinds(
    df: pd.DataFrame, data: DataParams, vp: ValidateParams, parsed: Parsed | None = None
) -> dict[str, str]:
    parsed = Parsed(df) if parsed is None else parsed
    role = roles(data)
    kinds = {}
    present = parsed.present if parsed.df is df else df.notna().sum()
    for col in df.columns.drop(ROW_ID, errors="ignore"):
        if col in role:
            kinds[col] = role[col]
            continue
        # Counts first, text second: most columns of a wide table are numbers, and strings are slow.
        if present[col] and parsed.count(col) >= vp.type_mostly * present[col]:
            kinds[col] = "numeric"
            continue
        values = df[col].dropna()
        if len(values) and values.astype(str).str.contains("\n", regex=False).any():
            kinds[col] = "text"  # notes spanning lines are prose, whatever their count of distinct values
        elif (
            len(values)
            and _share(values, DATE_REGEX) < vp.type_mostly
            and values.nunique() <= vp.free_text_ratio * len(df)
        ):
            kinds[col] = "categorical"
        else:
            kinds[col] = "text"
    return kinds


def _robust(x: pd.Series, vp: ValidateParams) -> list[float]:
    """A column's robust quantiles as the suite reads each numeric column's, impossible values left out."""
    x = x.to_numpy(dtype="float64")
    x = x[np.abs(x) < vp.max_abs]
    return np.quantile(x, [0.005, 0.995]).tolist() if len(x) else [0.0, 0.0]


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _expect(type_: str, level: str, **kwargs) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"level": level}}


@dataclass(frozen=True)
class Totals:
    """What the inference of a suite reads from the whole of a table that it sees only a sample of: its rows, each
    column's missing values, and the value counts of columns with few distinct values (None past COUNTED)."""

    rows: int
    missing: pd.Series
    counts: dict[str, pd.Series | None]


# Distinct values counted per column while a table streams: more than any category set, few enough to hold.
COUNTED = 100_000


def infer_suite(
    df: pd.DataFrame,
    data: DataParams,
    vp: ValidateParams,
    name: str,
    source: str,
    parsed: Parsed | None = None,
    totals: Totals | None = None,
) -> dict:
    """The suite of a reference batch df; with totals, df is a uniform sample of it, and the row count, null rates,
    category and label sets come from the totals (a rare category must not miss its set by not being sampled)."""
    parsed = Parsed(df) if parsed is None else parsed
    absent = [c for c in roles(data) if c not in df.columns]
    if absent:
        raise ValidationFailed(f"{source}: columns named in params.data are not in the data: {absent}")

    def value_counts(col: str) -> pd.Series:
        counted = totals.counts.get(col) if totals else None
        return df[col].value_counts() if counted is None else counted

    n = totals.rows if totals else len(df)
    if n < vp.min_rows:
        raise ValidationFailed(
            f"{source}: {n} row(s); a suite is inferred only from at least validate.min_rows={vp.min_rows} rows: "
            "bring a larger reference batch, or write expectations/<name>.json by hand"
        )
    classes = len(value_counts(data.target))
    if classes < 2 and data.task == "regression":
        raise ValidationFailed(
            f"{source}: target column {data.target!r} has {classes} distinct non-null value(s) in {n} rows (rule: a "
            "regression target needs 2 or more values; a constant has nothing to learn)"
        )
    if classes < 2:
        raise ValidationFailed(
            f"{source}: target column {data.target!r} has {classes} distinct non-null value(s) in "
            f"{n} rows (rule: a target needs 2 or more classes)"
        )
    kinds = column_kinds(df, data, vp, parsed)
    lo, hi = vp.row_count_band
    exps = [
        _expect("expect_table_columns_to_match_set", "batch", column_set=list(kinds), exact_match=True),
        _expect(
            "expect_table_row_count_to_be_between",
            "batch",
            min_value=math.floor(lo * n),
            max_value=math.ceil(hi * n),
        ),
    ]
    stats = {}
    present = n - totals.missing[list(kinds)] if totals else df[list(kinds)].notna().sum()
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    x = np.column_stack([parsed[c].to_numpy() for c in numeric]) if numeric else np.empty((len(df), 0))
    # Robust quantiles, so that the impossible values an export carries do not widen the range.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column has no quantiles
        q = np.nanquantile(np.where(np.abs(x) < vp.max_abs, x, np.nan), [0.005, 0.995], axis=0)
    for col, kind in kinds.items():
        null_rate = round(1 - int(present[col]) / n, 4) if n else 0.0
        stats[col] = {"kind": kind, "null_rate": null_rate}
        mostly = round(max(0.0, 1 - null_rate - vp.null_rate_slack), 4)
        level = "row" if kind in ("target", "patient_id") else "batch"
        exps.append(_expect("expect_column_values_to_not_be_null", level, column=col, mostly=mostly))
        if kind == "numeric" or (kind == "target" and data.task == "regression"):
            # A regression target is checked as a number is, row by row: a row whose target is text or out of
            # range is quarantined with that reason, never guessed.
            exps.append(
                _expect(
                    "expect_column_values_to_match_regex",
                    "row",
                    column=col,
                    regex=NUMBER_REGEX,
                    mostly=vp.type_mostly,
                )
            )
            q_lo, q_hi = q[:, numeric.index(col)].tolist() if kind == "numeric" else _robust(parsed[col], vp)
            margin = vp.range_margin * (q_hi - q_lo)
            low = max(q_lo - margin, 0.0) if q_lo >= 0 else q_lo - margin
            exps.append(
                _expect(
                    "expect_column_values_to_be_between",
                    "row",
                    column=col,
                    min_value=_sig(low),
                    max_value=_sig(q_hi + margin),
                )
            )
        elif kind == "categorical":
            # A value rarer than small_count could single out a patient in a file that is committed: it stands in
            # the set as OTHER, which admits any value outside the set (the model pools them the same way).
            common, rare = pool_rare(value_counts(col), max(vp.small_count, vp.category_min_count))
            allowed = sorted(common) + ([OTHER] if rare else [])
            exps.append(_expect("expect_column_values_to_be_in_set", "row", column=col, value_set=allowed))
        elif kind == "target":
            labels = sorted(value_counts(col).index)
            exps.append(_expect("expect_column_values_to_be_in_set", "batch", column=col, value_set=labels))
    meta = {
        "source": source,
        "reference_rows": n,
        **({"sampled_rows": len(df)} if len(df) < n else {}),
        "columns": stats,
        "inferred_with": vp.model_dump(mode="json", exclude={"leakage_auc", *STREAMING}),
    }
    return {"name": name, "expectations": exps, "meta": {"medflow": meta}, "notes": NOTES}


def suite_kinds(suite: dict) -> dict[str, str]:
    return {col: s["kind"] for col, s in suite["meta"]["medflow"]["columns"].items()}


def without(suite: dict, excluded: list[str]) -> dict:
    """suite less the columns data.exclude drops, which the table as read no longer has: an exclusion decided after
    the suite was inferred (a leak the gate found) leaves the rest of the contract in force."""
    drop = set(excluded) & set(suite_kinds(suite))
    if not drop:
        return suite
    out = copy.deepcopy(suite)
    out["expectations"] = [e for e in out["expectations"] if e["kwargs"].get("column") not in drop]
    for e in out["expectations"]:
        if "column_set" in e["kwargs"]:
            e["kwargs"]["column_set"] = [c for c in e["kwargs"]["column_set"] if c not in drop]
    for col in drop:
        del out["meta"]["medflow"]["columns"][col]
    return out


def unkinded(suite: dict) -> list[str]:
    """Columns the suite's column set admits with no kind in meta.medflow.columns: a hand edit that named a new
    column in one place only. valid.parquet keeps only columns with a kind, so each would vanish unannounced."""
    kinds = suite_kinds(suite)
    admitted = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
    return [c for e in admitted for c in e["kwargs"]["column_set"] if c not in kinds]


def role_mismatches(suite: dict, data: DataParams) -> list[str]:
    """Params and suite must agree on which columns are labels or identifiers, or PHI may become a feature."""
    kinds, want = suite_kinds(suite), roles(data)
    cols = sorted({c for c, k in kinds.items() if k in ROLE_KINDS} | set(want))
    return [f"{c}: suite says {kinds.get(c)}, params say {want.get(c)}" for c in cols if kinds.get(c) != want.get(c)]
