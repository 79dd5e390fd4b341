"""The expectation suite of a dataset: inferred once from reference data, then reviewed and edited by people.

The suite is stored as Great Expectations 1.x ExpectationSuite JSON and committed to git, so it holds column
names, ranges, category and label sets, rates and counts, never a value of an identifier, patient id or
free-text/date column. Validation results are reduced to counts and row ids: raw GX results carry cell values.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medflow.data.features import OTHER, pool_rare
from medflow.data.numbers import (
    NUMBER_REGEX,
    NUMBER_REGEXES,
    Conversion,
    NumberFormat,
    conversion,
    plain_numbers,
    readings,
    rewrite,
    written_as_number,
)
from medflow.params import DataParams, ValidateParams

ROW_ID = "_row_id"
# Dates are patient data (HIPAA counts them as identifiers), so a date column never gets a category set.
# A prefix match: whatever follows a date (seconds, a time zone) does not make it less of a date.
DATE_REGEX = r"^\s*(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
ROLE_KINDS = ("target", "patient_id", "identifier")
# How validate reads a table (ValidateParams), not what it infers from it.
STREAMING = ("stream_above_mb", "chunk_rows", "sample_rows")
# GX checks these on the text as read; other checks on a numeric column see the parsed numbers.
_TEXT_CHECKS = {"expect_column_values_to_match_regex", "expect_column_values_to_not_be_null"}

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


def _as_number(
    values: pd.Series, plain: pd.Series, column: str, source: str, vp: ValidateParams
) -> tuple[pd.Series, Conversion] | None:
    """Numbers written for people ("265,000", "12%", "12 mg", "3,5") as plain numbers, with what was done; None
    when the column is not mostly numbers. plain: the values as plain numbers. Fails when no single reading fits
    (mixed units, a comma that is a thousands separator in some values and a decimal comma in others)."""
    # Only what plain parsing missed is read again: a column of plain numbers with a few "1,262" among them is read
    # with both ways, so the values written for people (often the highest) are not quarantined as text.
    rest = values[plain.isna() & values.notna()]
    text = rest.astype(str).str.strip()
    # Category codes ("low", "F") hold no digit: one look at the distinct values settles it.
    if not len(text) or not any(any(ch.isdigit() for ch in v) for v in text.unique()):
        return None
    r = readings(text)
    percent, unit, comma = r["percent"].notna(), r["unit"].notna(), r["grouped"] | r["decimal"]
    formatted = comma | percent | unit
    n, given = int(formatted.sum()), int(values.notna().sum())
    if not n or int(plain.notna().sum()) + n < vp.type_mostly * given:
        return None
    # "1,234" reads both ways; "1,234,567" and "1,234.5" only as thousands, "3,5" and "1234,56" only as decimals.
    only_grouped = int((r["grouped"] & ~r["decimal"]).sum())
    only_decimal = int((r["decimal"] & ~r["grouped"]).sum())
    units = r["unit_name"].dropna().str.lower()
    stop = None
    # Counted as ints: numpy's True + True is True, and would let a column mixing two formats through.
    if sum(bool(f.any()) for f in (percent, unit, comma)) > 1:
        stop = "mixes number formats (separators, percent signs, units)"
    elif unit.any() and units.nunique() > 1:
        stop = f"has {units.nunique()} different units (rule: one unit per column)"
    elif only_grouped and only_decimal:
        stop = f"uses a comma as thousands separator in {only_grouped} and as decimal comma in {only_decimal} values"
    if stop:
        raise ValidationFailed(
            f"{source}: column {column!r} {stop}: {n} of {given} values are numbers written as text; convert "
            "them to plain numbers in the source or list the column in data.exclude"
        )
    reading = "percent" if percent.any() else "unit" if unit.any() else "decimal" if only_decimal else "thousands"
    fmt = NumberFormat(reading, units.iloc[0] if reading == "unit" else None)
    out, done = rewrite(values, text, r, fmt)
    what = f"unit {r['unit_name'].dropna().iloc[0]!r}" if reading == "unit" else None
    return out, conversion(fmt, what, done)


def normalise_numbers(
    df: pd.DataFrame, data: DataParams, vp: ValidateParams, source: str, parsed: Parsed
) -> tuple[pd.DataFrame, dict[str, Conversion]]:
    """df with text-coded number columns rewritten as plain numbers (in memory: the source is never touched);
    parsed follows the new frame."""
    role = roles(data)
    out, done = df, {}
    for col in df.columns:
        if col in role or col == ROW_ID:
            continue
        n = parsed.present[col]
        if not n or parsed.count(col) == n:
            continue
        converted = _as_number(df[col], parsed[col], col, source, vp)
        if converted is not None:
            out = out.copy() if out is df else out
            out[col], done[col] = converted
    parsed.rebase(out, list(done))
    return out, done


def convert(
    df: pd.DataFrame, formats: dict[str, Conversion], vp: ValidateParams, source: str, parsed: Parsed
) -> tuple[pd.DataFrame, dict[str, int]]:
    """normalise_numbers for one chunk of a table whose formats were decided on a sample: each column read the
    sample's way, with how many values were rewritten here. Fails, as normalise_numbers does on a whole table, when
    the chunk writes some of a column's numbers another way (another unit, percent signs beside decimal commas)."""
    out, counts = df, {}
    for col, fmt in formats.items():
        text = df[col].dropna().astype(str).str.strip()
        r = readings(text)
        other = {
            "percent signs": int(r["percent"].notna().sum()) if fmt.reading != "percent" else 0,
            "units": int(r["unit"].notna().sum()) if fmt.reading != "unit" else 0,
            "commas": int((r["grouped"] | r["decimal"]).sum()) if fmt.reading not in ("decimal", "thousands") else 0,
            "another unit": int((r["unit_name"].dropna().str.lower() != fmt.unit).sum()) if fmt.unit else 0,
            "thousands separators": int((r["grouped"] & ~r["decimal"]).sum()) if fmt.reading == "decimal" else 0,
            "decimal commas": int((r["decimal"] & ~r["grouped"]).sum()) if fmt.reading == "thousands" else 0,
        }
        clash = next(((k, v) for k, v in other.items() if v), None)
        if clash:
            raise ValidationFailed(
                f"{source}: column {col!r} mixes number formats: {clash[1]} values in data rows {df.index[0] + 1}-"
                f"{df.index[-1] + 1} are written with {clash[0]}, the table's sample with {fmt.what}; convert them to "
                "plain numbers in the source or list the column in data.exclude"
            )
        out = out.copy() if out is df else out
        out[col], counts[col] = rewrite(df[col], text, r, fmt.format)
    parsed.rebase(out, list(counts))
    return out, counts


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
    return Check("magnitude_below_max_abs", col, "row", not ids, False, len(ids), ids, f"[{max_abs:g}]", detail,
                 rows, missing)  # fmt: skip


class Parsed(dict):
    """plain_numbers() of each column of one frame, computed on first use: a 2,000-column table is parsed once per
    column, not once per check."""

    def __init__(self, df: pd.DataFrame):
        super().__init__()
        self.df = df
        self.counts: dict[str, int] = {}
        self.present = df.notna().sum()

    def __missing__(self, col: str) -> pd.Series:
        self[col] = plain_numbers(self.df[col])
        self.counts[col] = int(np.count_nonzero(~np.isnan(self[col].to_numpy())))
        return self[col]

    def count(self, col: str) -> int:
        """Values of col that parse as numbers."""
        if col not in self.counts:
            self[col]  # noqa: B018 - parses and counts
        return self.counts[col]

    def matrix(self, cols: list[str], index: pd.Index) -> np.ndarray:
        """The parsed columns as one float matrix, rows of index (labels of self.df)."""
        if not cols:
            return np.empty((len(index), 0))
        rows = self.df.index.get_indexer(index)
        return np.column_stack([self[c].to_numpy() for c in cols])[rows]

    def rebase(self, df: pd.DataFrame, changed: list[str]) -> None:
        self.df = df
        self.present = df.notna().sum()
        for col in changed:
            self.pop(col, None)
            self.counts.pop(col, None)


def typed(df: pd.DataFrame, kinds: dict[str, str], parsed: Parsed | None = None) -> pd.DataFrame:
    """df (or some of its rows) with numeric columns as floats."""
    cache = Parsed(df) if parsed is None else parsed
    cols = [col for col, kind in kinds.items() if kind == "numeric" and col in df]
    # One concat, not a column assignment per column: 2,000 assignments fragment the frame.
    parsed = pd.DataFrame(cache.matrix(cols, df.index), index=df.index, columns=cols)
    return pd.concat([df.drop(columns=cols), parsed], axis=1)[list(df.columns)]


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
        if kind == "numeric":
            exps.append(
                _expect(
                    "expect_column_values_to_match_regex",
                    "row",
                    column=col,
                    regex=NUMBER_REGEX,
                    mostly=vp.type_mostly,
                )
            )
            q_lo, q_hi = q[:, numeric.index(col)].tolist()
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


def role_mismatches(suite: dict, data: DataParams) -> list[str]:
    """Params and suite must agree on which columns are labels or identifiers, or PHI may become a feature."""
    kinds, want = suite_kinds(suite), roles(data)
    cols = sorted({c for c, k in kinds.items() if k in ROLE_KINDS} | set(want))
    return [f"{c}: suite says {kinds.get(c)}, params say {want.get(c)}" for c in cols if kinds.get(c) != want.get(c)]


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


def _errors(info: dict) -> list[str]:
    # GX reports an expectation's error flat, or nested per metric when a metric failed to compute.
    infos = [info] if "raised_exception" in info else list(info.values())
    return sorted({str(i.get("exception_message")) for i in infos if isinstance(i, dict) and i.get("raised_exception")})


def _passes(kw: dict, count: int, base: int) -> bool:
    """count failing values of base: none may fail, or at least `mostly` of them must pass."""
    # GX's share, (base - count) / base: 1 - count / base differs in the last bit (1 - 2/3 > 1/3), and a `mostly`
    # written as that share would pass here and fail in GX.
    return count == 0 if "mostly" not in kw else (not base or (base - count) / base >= kw["mostly"])


def _number_text(values: pd.Series, x: pd.Series, regex: str) -> pd.Series:
    """Which values match regex, one of NUMBER_REGEXES, read from their parsed numbers x. Text that does not parse
    meets the regex itself: the older spelling, with \\d, takes digits of other scripts ("٣"), as GX does."""
    ok = written_as_number(values, x)
    rest = ~ok & values.notna()
    if rest.any():
        ok[rest] = values[rest].astype(str).str.contains(regex, regex=True)
    return ok


def _native(type_: str, kw: dict, frame: pd.DataFrame, parsed: Parsed) -> dict:
    """The GX result fields medflow reads (unexpected/element/missing counts, unexpected row ids), computed with
    vectorised pandas: GX costs milliseconds per expectation, minutes on a table of 2,000 columns."""
    col = frame[kw["column"]]
    n = len(col)
    missing = col.isna()
    if type_ == "expect_column_values_to_not_be_null":
        bad, base = missing, n
    else:
        values = col[~missing]
        if type_ == "expect_column_values_to_match_regex" and kw["regex"] in NUMBER_REGEXES:
            ok = _number_text(values, parsed[kw["column"]][values.index], kw["regex"])
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
    success = _passes(kw, count, base)
    return {
        "success": success,
        "unexpected_count": count,
        "element_count": n,
        "missing_count": int(missing.sum()),
        "row_ids": tuple(int(i) for i in frame.loc[bad, ROW_ID]) if ROW_ID in frame else (),
    }


def _batched(type_: str, kws: list[dict], frame: pd.DataFrame, parsed: Parsed) -> list[dict]:
    """_native for many columns at once, as matrix operations: the checks every numeric column gets (not null,
    parses as a number, within range) cost one pass over the table, not one pandas call per column."""
    cols = [kw["column"] for kw in kws]
    missing = frame[cols].isna().to_numpy()
    if type_ == "expect_column_values_to_not_be_null":
        bad, base = missing, np.full(len(cols), len(frame))
    elif type_ == "expect_column_values_to_match_regex":  # NUMBER_REGEXES only
        rows = frame.index
        written = np.column_stack([_number_text(frame[kw["column"]], parsed[kw["column"]].loc[rows], kw["regex"])
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
        success = _passes(kw, count, n)
        ids = tuple(int(i) for i in row_id[bad[:, j]]) if count else ()
        out.append({"success": success, "unexpected_count": count, "element_count": len(frame),
                    "missing_count": int(missing[:, j].sum()), "row_ids": ids})  # fmt: skip
    return out


def _table_result(type_: str, kw: dict, frame: pd.DataFrame) -> dict:
    if type_ == "expect_table_columns_to_match_set":
        have, want = set(frame.columns), set(kw["column_set"])
        missing, unexpected = sorted(want - have), sorted(have - want) if kw.get("exact_match", True) else []
        return {"success": not missing and not unexpected,
                "details": {"mismatched": {"missing": missing, "unexpected": unexpected}}}  # fmt: skip
    lo, hi = kw.get("min_value"), kw.get("max_value")
    rows = len(frame)
    return {"success": (lo is None or rows >= lo) and (hi is None or rows <= hi), "observed_value": rows}


_NATIVE = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
}
_TABLE = {"expect_table_columns_to_match_set", "expect_table_row_count_to_be_between"}


def _batchable(type_: str, kw: dict, key: str) -> bool:
    if type_ == "expect_column_values_to_not_be_null":
        return True
    if type_ == "expect_column_values_to_match_regex":
        return kw.get("regex") in NUMBER_REGEXES
    return type_ == "expect_column_values_to_be_between" and key == "number"


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


def run_suite(df: pd.DataFrame, suite: dict, parsed: Parsed | None = None, gx_only: bool = False) -> list[Check]:
    """Validates df (columns as read + ROW_ID); keeps counts and row ids. The expectation types medflow infers
    are evaluated natively, column by column in pandas; any other type a person adds goes to GX. gx_only: every
    column expectation goes to GX, the reference the native evaluator is held to (tests/test_gx_parity.py)."""
    kinds = suite_kinds(suite)
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
        if type_ in _TABLE:
            checks.append(_check(type_, kw, meta, _table_result(type_, kw, frames["table"]), [], (), at))
        elif gx_only:
            to_gx[key].append((at, exp))
        elif _batchable(type_, kw, key):
            batch.setdefault((type_, key), []).append((at, exp))
        elif type_ in _NATIVE:
            try:
                res = _native(type_, kw, frames[key], parsed)
                checks.append(_check(type_, kw, meta, res, [], res["row_ids"], at))
            except (TypeError, ValueError, KeyError, re.error) as exc:
                checks.append(_check(type_, kw, meta, {}, [f"{type(exc).__name__}"], (), at))
        else:
            to_gx[key].append((at, exp))
    for (type_, key), exps in batch.items():
        results = _batched(type_, [e["kwargs"] for _, e in exps], frames[key], parsed)
        for (at, e), res in zip(exps, results, strict=True):
            checks.append(_check(type_, e["kwargs"], e.get("meta", {}), res, [], res["row_ids"], at))
    checks += _run_gx(frames, to_gx, suite["name"])
    order = {(e["type"], e["kwargs"].get("column")): i for i, e in enumerate(suite["expectations"])}
    return sorted(checks, key=lambda c: order.get((c.type, c.column), len(order)) if c.at is None else c.at)


def gx_expectations(suite: dict) -> list[str]:
    """Expectation types of the suite that run_suite leaves to Great Expectations."""
    return sorted({e["type"] for e in suite["expectations"] if e["type"] not in _TABLE | _NATIVE})


def combine(parts: list[list[Check]], suite: dict, rows: int, max_abs: float) -> list[Check]:
    """The checks of a table validated chunk by chunk (run_suite + magnitude_checks of each chunk) as they come out
    of the whole table: counts and row ids added up, every `mostly` judged on the totals, the row count on all rows.
    Only expectations medflow evaluates itself can be combined (see gx_expectations)."""
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
        if first.type == "magnitude_below_max_abs":
            out.append(_magnitude(first.column, ids, elements, missing, max_abs))
            continue
        exp = suite["expectations"][first.at]
        kw, meta = exp.get("kwargs", {}), exp.get("meta", {})
        if first.type == "expect_table_row_count_to_be_between":
            lo, hi = kw.get("min_value"), kw.get("max_value")
            res = {"success": (lo is None or rows >= lo) and (hi is None or rows <= hi), "observed_value": rows}
        else:
            count = sum(c.unexpected_count or 0 for c in group)
            base = elements if first.type == "expect_column_values_to_not_be_null" else elements - missing
            res = {"success": _passes(kw, count, base), "unexpected_count": count, "element_count": elements,
                   "missing_count": missing}  # fmt: skip
        out.append(_check(first.type, kw, meta, res, [], ids, first.at))
    return out


@functools.cache
def _gx_whole_frame():
    """GX's batch definition of a whole in-memory frame, in an ephemeral context made once per process: a context
    costs ~0.1 s and a temporary folder, a validation against it milliseconds."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        context.data_sources.add_pandas("medflow")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("whole")
    )


def _run_gx(frames: dict[str, pd.DataFrame], groups: dict[str, list[tuple[int, dict]]], name: str) -> list[Check]:
    """Expectations of other types, (place in the suite, expectation) per frame, one GX batch per frame (GX results
    are reduced to counts and row ids). Each result is read with the suite's own kwargs and meta: GX echoes its
    normalised kwargs, in which `mostly: 1.0` is gone and a row check with it would never stop the run."""
    if not any(groups.values()):
        return []
    import great_expectations as gx

    whole = _gx_whole_frame()
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]}
    checks = []
    for key, exps in groups.items():
        if not exps:
            continue
        own = {at: exp for at, exp in exps}
        tagged = [{**exp, "meta": {**exp.get("meta", {}), "medflow_at": at}} for at, exp in exps]
        gx_suite = gx.ExpectationSuite(name=f"{name}-{key}", expectations=tagged)
        batch = whole.get_batch(batch_parameters={"dataframe": frames[key]})
        result = batch.validate(gx_suite, result_format=fmt if key != "table" else "SUMMARY")
        for r in result.results:
            at = r.expectation_config.meta["medflow_at"]
            exp = own[at]
            ids = tuple(sorted(int(u[ROW_ID]) for u in r.result.get("unexpected_index_list") or []))
            res = {**r.result, "success": r.success}
            checks.append(_check(exp["type"], exp.get("kwargs", {}), exp.get("meta", {}), res,
                                 _errors(r.exception_info), ids, at))  # fmt: skip
    return checks
