"""The native evaluator: the four column expectation types medflow infers (not null, match a regex, in a set,
between bounds) and the two table ones, computed with vectorised pandas and numpy. GX costs milliseconds per
expectation, minutes on a table of 2,000 columns; tests/test_gx_parity.py holds these verdicts to GX's.

Each returns the GX result fields medflow reads (unexpected/element/missing counts, unexpected row ids).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data.columns import ROW_ID
from medflow.data.features import OTHER
from medflow.data.numbers import NUMBER_REGEXES, Parsed, written_as_number


def passes(kw: dict, count: int, base: int) -> bool:
    """count failing values of base: none may fail, or at least `mostly` of them must pass."""
    # GX's share, (base - count) / base: 1 - count / base differs in the last bit (1 - 2/3 > 1/3), and a `mostly`
    # written as that share would pass here and fail in GX.
    return count == 0 if "mostly" not in kw else (not base or (base - count) / base >= kw["mostly"])


def number_text(values: pd.Series, x: pd.Series, regex: str) -> pd.Series:
    """Which values match regex, one of NUMBER_REGEXES, read from their parsed numbers x. Text that does not parse
    meets the regex itself: the older spelling, with \\d, takes digits of other scripts ("٣"), as GX does."""
    ok = written_as_number(values, x)
    rest = ~ok & values.notna()
    if rest.any():
        ok[rest] = values[rest].astype(str).str.contains(regex, regex=True)
    return ok


def column_result(type_: str, kw: dict, frame: pd.DataFrame, parsed: Parsed) -> dict:
    """One column expectation, evaluated in pandas."""
    col = frame[kw["column"]]
    n = len(col)
    missing = col.isna()
    if type_ == "expect_column_values_to_not_be_null":
        bad, base = missing, n
    else:
        values = col[~missing]
        if type_ == "expect_column_values_to_match_regex" and kw["regex"] in NUMBER_REGEXES:
            ok = number_text(values, parsed[kw["column"]][values.index], kw["regex"])
        elif type_ == "expect_column_values_to_match_regex":
            ok = values.astype(str).str.contains(kw["regex"], regex=True)
        elif type_ == "expect_column_values_to_be_in_set":
            ok = values.isin(kw["value_set"]) | (OTHER in kw["value_set"])
        else:
            lo, hi = kw.get("min_value"), kw.get("max_value")
            ok = pd.Series(True, index=values.index)
            if lo is not None:
                ok &= values > lo if kw.get("strict_min") else values >= lo
            if hi is not None:
                ok &= values < hi if kw.get("strict_max") else values <= hi
        bad = pd.Series(False, index=col.index)
        bad[values.index] = ~ok.astype(bool)
        base = n - int(missing.sum())
    count = int(bad.sum())
    success = passes(kw, count, base)
    return {
        "success": success,
        "unexpected_count": count,
        "element_count": n,
        "missing_count": int(missing.sum()),
        "row_ids": tuple(int(i) for i in frame.loc[bad, ROW_ID]) if ROW_ID in frame else (),
    }


def batched(type_: str, kws: list[dict], frame: pd.DataFrame, parsed: Parsed) -> list[dict]:
    """column_result for many columns at once, as matrix operations: the checks every numeric column gets (not null,
    parses as a number, within range) cost one pass over the table, not one pandas call per column."""
    cols = [kw["column"] for kw in kws]
    missing = frame[cols].isna().to_numpy()
    if type_ == "expect_column_values_to_not_be_null":
        bad, base = missing, np.full(len(cols), len(frame))
    elif type_ == "expect_column_values_to_match_regex":  # NUMBER_REGEXES only
        rows = frame.index
        written = np.column_stack([number_text(frame[kw["column"]], parsed[kw["column"]].loc[rows], kw["regex"])
                                   .to_numpy() for kw in kws])  # fmt: skip
        bad, base = ~missing & ~written, (~missing).sum(axis=0)
    else:
        x = frame[cols].to_numpy(dtype="float64")
        lo = np.array([-np.inf if kw.get("min_value") is None else kw["min_value"] for kw in kws], dtype="float64")
        hi = np.array([np.inf if kw.get("max_value") is None else kw["max_value"] for kw in kws], dtype="float64")
        # A strict bound that is absent is no bound: -inf stays in [-inf, hi] as GX has it.
        strict_lo = np.array([bool(kw.get("strict_min")) and kw.get("min_value") is not None for kw in kws])
        strict_hi = np.array([bool(kw.get("strict_max")) and kw.get("max_value") is not None for kw in kws])
        below = np.where(strict_lo, x <= lo, x < lo)
        above = np.where(strict_hi, x >= hi, x > hi)
        bad, base = ~missing & (below | above), (~missing).sum(axis=0)
    counts = bad.sum(axis=0)
    row_id = frame[ROW_ID].to_numpy()
    out = []
    for j, kw in enumerate(kws):
        count, n = int(counts[j]), int(base[j])
        success = passes(kw, count, n)
        ids = tuple(int(i) for i in row_id[bad[:, j]]) if count else ()
        out.append({"success": success, "unexpected_count": count, "element_count": len(frame),
                    "missing_count": int(missing[:, j].sum()), "row_ids": ids})  # fmt: skip
    return out


def table_result(type_: str, kw: dict, frame: pd.DataFrame) -> dict:
    if type_ == "expect_table_columns_to_match_set":
        have, want = set(frame.columns), set(kw["column_set"])
        missing, unexpected = sorted(want - have), sorted(have - want) if kw.get("exact_match", True) else []
        return {"success": not missing and not unexpected,
                "details": {"mismatched": {"missing": missing, "unexpected": unexpected}}}  # fmt: skip
    lo, hi = kw.get("min_value"), kw.get("max_value")
    rows = len(frame)
    return {"success": (lo is None or rows >= lo) and (hi is None or rows <= hi), "observed_value": rows}


NATIVE = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
}
TABLE = {"expect_table_columns_to_match_set", "expect_table_row_count_to_be_between"}


def batchable(type_: str, kw: dict, key: str) -> bool:
    if type_ == "expect_column_values_to_not_be_null":
        return True
    if type_ == "expect_column_values_to_match_regex":
        return kw.get("regex") in NUMBER_REGEXES
    return type_ == "expect_column_values_to_be_between" and key == "number"
