"""A suite run on a frame: each expectation's outcome as a Check, with counts and row ids only, whoever evaluates it
(the native evaluator for the types medflow infers, Great Expectations for the rest); the magnitude and split-value
checks medflow adds; and the checks of a table validated chunk by chunk, combined as the whole table's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medflow.data import gx_checks, native_checks
from medflow.data.columns import ROW_ID
from medflow.data.native_checks import NATIVE, TABLE, batchable, passes, table_result
from medflow.data.numbers import NUMBER_REGEXES, Parsed, typed
from medflow.data.split_values import without_value
from medflow.data.suite import suite_kinds

MAGNITUDE = "magnitude_below_max_abs"
SPLIT_VALUE = "split_value_present"

# GX checks these on the text as read; other checks on a numeric column see the parsed numbers.
_TEXT_CHECKS = {"expect_column_values_to_match_regex", "expect_column_values_to_not_be_null"}


@dataclass(frozen=True)
class Check:
    """One expectation's outcome, with counts and row ids only."""

    type: str
    column: str | None
    level: str
    success: bool
    stops: bool
    unexpected_count: int | None
    row_ids: tuple[int, ...]
    bound: str
    detail: str
    # The rows it saw and how many were missing: what combining the checks of a table's chunks needs.
    element_count: int | None = None
    missing_count: int | None = None
    at: int | None = None  # its expectation's place in the suite (a column may have two of one type)

    @property
    def rule(self) -> str:
        return f"{self.column}: {self.type}"

    @property
    def reason(self) -> str:
        return f"{self.rule} {self.bound}".rstrip()


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, int | float) else str(x)


def _bound(kw: dict) -> str:
    if "value_set" in kw:
        return str(list(kw["value_set"]))
    if "regex" in kw:
        return "(not a number)" if kw["regex"] in NUMBER_REGEXES else f"/{kw['regex']}/"
    if "min_value" in kw or "max_value" in kw:
        return f"[{_num(kw.get('min_value'))}, {_num(kw.get('max_value'))}]"
    return ""


def _detail(type_: str, kw: dict, res: dict, bound: str) -> str:
    """A failure described for a person: column names, counts, bounds; never a cell value."""
    n = res.get("unexpected_count")
    if type_ == "expect_table_columns_to_match_set":
        mismatch = res.get("details", {}).get("mismatched", {})
        return f"missing columns {mismatch.get('missing', [])}; unexpected {mismatch.get('unexpected', [])}"
    if type_ == "expect_table_row_count_to_be_between":
        return f"{res.get('observed_value')} rows, expected {bound}"
    if type_ == "expect_column_values_to_not_be_null":
        return f"{n} of {res.get('element_count')} values missing (allowed {1 - kw.get('mostly', 1):.0%})"
    non_null = res.get("element_count", 0) - res.get("missing_count", 0)
    need = f" (at least {kw['mostly']:.0%} must pass)" if "mostly" in kw else ""
    if kw.get("regex") in NUMBER_REGEXES:
        return f"{n} of {non_null} non-null values do not parse as numbers{need}"
    return f"{n} of {non_null} non-null values outside {bound}{need}"


def _check(
    type_: str, kw: dict, meta: dict, res: dict, errors: list[str], row_ids: tuple[int, ...], at: int | None = None
) -> Check:
    kw = {k: v for k, v in kw.items() if v is not None}
    bound = _bound(kw)
    if errors:
        level, detail = "batch", f"could not be evaluated: {'; '.join(errors)}"
    else:
        level, detail = meta.get("level", "batch"), _detail(type_, kw, res, bound)
    # A row-level check stops the run only when fewer rows than its `mostly` pass.
    success = bool(res.get("success")) and not errors
    stops = not success and (level == "batch" or "mostly" in kw)
    return Check(type_, kw.get("column"), level, success, stops, res.get("unexpected_count"), row_ids, bound, detail,
                 res.get("element_count"), res.get("missing_count"), at)  # fmt: skip


def magnitude_checks(df: pd.DataFrame, kinds: dict[str, str], max_abs: float, parsed: Parsed) -> list[Check]:
    """Row checks quarantining numbers no measurement reaches (1e308, overflowed exports), which pass any range
    check widened from a few of them and overflow float32 features."""
    cols = [c for c, k in kinds.items() if k == "numeric" and c in df]
    x = parsed.matrix(cols, df.index)
    with np.errstate(invalid="ignore"):
        bad = np.abs(x) >= max_abs
    row_id = df[ROW_ID].to_numpy()
    present = (~np.isnan(x)).sum(axis=0)
    return [
        _magnitude(col, tuple(int(i) for i in row_id[bad[:, j]]) if bad[:, j].any() else (), len(df),
                   len(df) - int(present[j]), max_abs)
        for j, col in enumerate(cols)
    ]  # fmt: skip


def _magnitude(col: str, ids: tuple[int, ...], rows: int, missing: int, max_abs: float) -> Check:
    detail = f"{len(ids)} of {rows - missing} values reach |x| >= {max_abs:g}"
    return Check(MAGNITUDE, col, "row", not ids, False, len(ids), ids, f"[{max_abs:g}]", detail,
                 rows, missing)  # fmt: skip


def split_value_checks(
    df: pd.DataFrame, column: str | None, by: str, kinds: dict[str, str], parsed: Parsed
) -> list[Check]:
    """split.by=time or site (column: its column): a row check that every row has a value the split can place. A row
    without one may belong to the held-out era or site, so it can be neither held out nor trained on. As a row check
    its rows join validate's quarantine with the others, within validate.max_quarantine and the screen for a
    quarantine concentrated on the sickest patients (rows without an admission time may all be the ICU's)."""
    if column is None or column not in df:
        return []
    # The column as clean hands it to split: a numeric one as parsed here.
    values = typed(df[[column]], kinds, parsed)[column]
    bad = without_value(values, by)
    ids = tuple(int(i) for i in df[ROW_ID].to_numpy()[bad])
    return [_split_value(column, f"(split.by={by} needs a value on every row)", ids, len(df), int(values.isna().sum()))]


def _split_value(col: str, bound: str, ids: tuple[int, ...], rows: int, missing: int) -> Check:
    detail = f"{len(ids)} of {rows} rows have no value the split can place"
    return Check(SPLIT_VALUE, col, "row", not ids, False, len(ids), ids, bound, detail, rows, missing)


def run_suite(df: pd.DataFrame, suite: dict, parsed: Parsed | None = None, gx_only: bool = False) -> list[Check]:
    """Validates df (columns as read + ROW_ID); keeps counts and row ids. The expectation types medflow infers
    are evaluated natively, column by column in pandas; any other type a person adds goes to GX. gx_only: every
    column expectation goes to GX, the reference the native evaluator is held to (tests/test_gx_parity.py)."""
    kinds = suite_kinds(suite)
    # A target with a range is a regression's: its range check reads it as numbers.
    ranged = {e["kwargs"]["column"] for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_between"}
    kinds = kinds | dict.fromkeys({c for c, k in kinds.items() if k == "target"} & ranged, "numeric")
    parsed = Parsed(df) if parsed is None else parsed
    frames = {"table": df.drop(columns=ROW_ID), "text": df, "number": typed(df, kinds, parsed)}
    checks, to_gx = [], {k: [] for k in frames}
    batch: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for at, exp in enumerate(suite["expectations"]):
        type_, kw, meta = exp["type"], exp.get("kwargs", {}), exp.get("meta", {})
        col = kw.get("column")
        numeric = kinds.get(col) == "numeric" and type_ not in _TEXT_CHECKS
        key = "table" if col is None else "number" if numeric else "text"
        if col is not None and col not in df.columns:
            continue  # expect_table_columns_to_match_set names it, once
        if type_ in TABLE:
            checks.append(_check(type_, kw, meta, table_result(type_, kw, frames["table"]), [], (), at))
        elif gx_only:
            to_gx[key].append((at, exp))
        elif batchable(type_, kw, key):
            batch.setdefault((type_, key), []).append((at, exp))
        elif type_ in NATIVE:
            try:
                res = native_checks.column_result(type_, kw, frames[key], parsed)
                checks.append(_check(type_, kw, meta, res, [], res["row_ids"], at))
            except (TypeError, ValueError, KeyError, re.error) as exc:
                checks.append(_check(type_, kw, meta, {}, [f"{type(exc).__name__}"], (), at))
        else:
            to_gx[key].append((at, exp))
    for (type_, key), exps in batch.items():
        results = native_checks.batched(type_, [e["kwargs"] for _, e in exps], frames[key], parsed)
        for (at, e), res in zip(exps, results, strict=True):
            checks.append(_check(type_, e["kwargs"], e.get("meta", {}), res, [], res["row_ids"], at))
    for at, exp, res, errors, ids in gx_checks.run_gx(frames, to_gx, suite["name"]):
        checks.append(_check(exp["type"], exp.get("kwargs", {}), exp.get("meta", {}), res, errors, ids, at))
    order = {(e["type"], e["kwargs"].get("column")): i for i, e in enumerate(suite["expectations"])}
    return sorted(checks, key=lambda c: order.get((c.type, c.column), len(order)) if c.at is None else c.at)


def gx_expectations(suite: dict) -> list[str]:
    """Expectation types of the suite that run_suite leaves to Great Expectations."""
    return sorted({e["type"] for e in suite["expectations"] if e["type"] not in TABLE | NATIVE})


def combine(parts: list[list[Check]], suite: dict, rows: int, max_abs: float) -> list[Check]:
    """The checks of a table validated chunk by chunk (run_suite, magnitude and split-value checks of each chunk) as
    they come out of the whole table: counts and row ids added up, every `mostly` judged on the totals, the row count
    on all rows. Only expectations medflow evaluates itself can be combined (see gx_expectations)."""
    out = []
    for group in zip(*parts, strict=True):
        first = group[0]
        if first.type == "expect_table_columns_to_match_set":
            out.append(first)
            continue
        broken = [c for c in group if c.element_count is None and c.type != "expect_table_row_count_to_be_between"]
        if broken:
            out.append(broken[0])  # could not be evaluated in some chunk: a batch failure, as in one piece
            continue
        ids = tuple(i for c in group for i in c.row_ids)
        elements, missing = sum(c.element_count or 0 for c in group), sum(c.missing_count or 0 for c in group)
        if first.type == MAGNITUDE:
            out.append(_magnitude(first.column, ids, elements, missing, max_abs))
            continue
        if first.type == SPLIT_VALUE:
            out.append(_split_value(first.column, first.bound, ids, elements, missing))
            continue
        exp = suite["expectations"][first.at]
        kw, meta = exp.get("kwargs", {}), exp.get("meta", {})
        if first.type == "expect_table_row_count_to_be_between":
            lo, hi = kw.get("min_value"), kw.get("max_value")
            res = {"success": (lo is None or rows >= lo) and (hi is None or rows <= hi), "observed_value": rows}
        else:
            count = sum(c.unexpected_count or 0 for c in group)
            base = elements if first.type == "expect_column_values_to_not_be_null" else elements - missing
            res = {"success": passes(kw, count, base), "unexpected_count": count, "element_count": elements,
                   "missing_count": missing}  # fmt: skip
        out.append(_check(first.type, kw, meta, res, [], ids, first.at))
    return out
