"""The expectation suite of a dataset: inferred once from reference data, then reviewed and edited by people.

The suite is stored as Great Expectations 1.x ExpectationSuite JSON and committed to git, so it holds column
names, ranges, category and label sets, rates and counts, never a value of an identifier, patient id or
free-text/date column. Validation results are reduced to counts and row ids: raw GX results carry cell values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from medflow.params import DataParams, ValidateParams

ROW_ID = "_row_id"
NUMBER_REGEX = r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$"
# Dates are patient data (HIPAA counts them as identifiers), so a date column never gets a category set.
# A prefix match: whatever follows a date (seconds, a time zone) does not make it less of a date.
DATE_REGEX = r"^\s*(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
ROLE_KINDS = ("target", "patient_id", "identifier")
# GX checks these on the text as read; other checks on a numeric column see the parsed numbers.
_TEXT_CHECKS = {"expect_column_values_to_match_regex", "expect_column_values_to_not_be_null"}

NOTES = (
    "Inferred by medflow from reference data; review and edit by hand. meta.level 'batch': a failure stops "
    "the run. meta.level 'row': failing rows are quarantined with a reason, and the run stops only if fewer "
    "than `mostly` of the rows pass. Numeric columns are checked as numbers (text that does not parse counts "
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


def column_kinds(df: pd.DataFrame, data: DataParams, vp: ValidateParams) -> dict[str, str]:
    role = roles(data)
    kinds = {}
    for col in df.columns.drop(ROW_ID, errors="ignore"):
        values = df[col].dropna()
        if col in role:
            kinds[col] = role[col]
        elif len(values) and _share(values, NUMBER_REGEX) >= vp.type_mostly:
            kinds[col] = "numeric"
        elif (
            len(values)
            and _share(values, DATE_REGEX) < vp.type_mostly
            and values.nunique() <= vp.free_text_ratio * len(df)
        ):
            kinds[col] = "categorical"
        else:
            kinds[col] = "text"
    return kinds


def numbers(col: pd.Series) -> pd.Series:
    """Parsed values of a numeric column; text that NUMBER_REGEX rejects is NaN, exactly as GX sees it."""
    text = col.astype("string")
    parses = text.str.contains(NUMBER_REGEX, regex=True, na=False)
    return pd.to_numeric(text.where(parses).str.strip()).astype("float64")


def typed(df: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    out = df.copy()
    for col, kind in kinds.items():
        if kind == "numeric" and col in out:
            out[col] = numbers(out[col])
    return out


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _expect(type_: str, level: str, **kwargs) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"level": level}}


def infer_suite(df: pd.DataFrame, data: DataParams, vp: ValidateParams, name: str, source: str) -> dict:
    absent = [c for c in roles(data) if c not in df.columns]
    if absent:
        raise ValidationFailed(f"{source}: columns named in params.data are not in the data: {absent}")
    kinds = column_kinds(df, data, vp)
    n = len(df)
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
    for col, kind in kinds.items():
        values = df[col].dropna()
        null_rate = round(1 - len(values) / n, 4) if n else 0.0
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
            # Robust quantiles, so that the impossible values an export carries do not widen the range.
            q_lo, q_hi = numbers(values).quantile([0.005, 0.995]).tolist()
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
            counts = values.value_counts()
            allowed = sorted(counts[counts >= vp.category_min_count].index)
            exps.append(_expect("expect_column_values_to_be_in_set", "row", column=col, value_set=allowed))
        elif kind == "target":
            labels = sorted(values.unique())
            exps.append(_expect("expect_column_values_to_be_in_set", "batch", column=col, value_set=labels))
    meta = {
        "source": source,
        "reference_rows": n,
        "columns": stats,
        "inferred_with": vp.model_dump(mode="json", exclude={"leakage_auc", "small_count"}),
    }
    return {"name": name, "expectations": exps, "meta": {"medflow": meta}, "notes": NOTES}


def suite_kinds(suite: dict) -> dict[str, str]:
    return {col: s["kind"] for col, s in suite["meta"]["medflow"]["columns"].items()}


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
        return "(not a number)" if kw["regex"] == NUMBER_REGEX else f"/{kw['regex']}/"
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
    if kw.get("regex") == NUMBER_REGEX:
        return f"{n} of {non_null} non-null values do not parse as numbers{need}"
    return f"{n} of {non_null} non-null values outside {bound}{need}"


def _errors(info: dict) -> list[str]:
    # GX reports an expectation's error flat, or nested per metric when a metric failed to compute.
    infos = [info] if "raised_exception" in info else list(info.values())
    return sorted({str(i.get("exception_message")) for i in infos if isinstance(i, dict) and i.get("raised_exception")})


def run_suite(df: pd.DataFrame, suite: dict) -> list[Check]:
    """Validates df (columns as read + ROW_ID) with GX in an ephemeral context; keeps counts and row ids."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    kinds = suite_kinds(suite)
    frames = {"table": df.drop(columns=ROW_ID), "text": df, "number": typed(df, kinds)}
    groups: dict[str, list[dict]] = {k: [] for k in frames}
    for exp in suite["expectations"]:
        col = exp["kwargs"].get("column")
        if col is None:
            groups["table"].append(exp)
        elif col not in df.columns:
            continue  # expect_table_columns_to_match_set names it, once
        elif kinds.get(col) == "numeric" and exp["type"] not in _TEXT_CHECKS:
            groups["number"].append(exp)
        else:
            groups["text"].append(exp)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batches = context.data_sources.add_pandas("medflow").add_dataframe_asset("table")
    whole = batches.add_batch_definition_whole_dataframe("whole")
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]}
    checks = []
    for key, exps in groups.items():
        if not exps:
            continue
        gx_suite = gx.ExpectationSuite(name=f"{suite['name']}-{key}", expectations=exps)
        batch = whole.get_batch(batch_parameters={"dataframe": frames[key]})
        result = batch.validate(gx_suite, result_format=fmt if key != "table" else "SUMMARY")
        for r in result.results:
            cfg = r.expectation_config
            kw = {k: v for k, v in cfg.kwargs.items() if v is not None}
            bound = _bound(kw)
            errors = _errors(r.exception_info)
            if errors:
                level, detail = "batch", f"could not be evaluated: {'; '.join(errors)}"
            else:
                level, detail = cfg.meta.get("level", "batch"), _detail(cfg.type, kw, r.result, bound)
            # A row-level check stops the run only when fewer rows than its `mostly` pass.
            stops = not r.success and (level == "batch" or "mostly" in kw)
            ids = tuple(sorted(int(u[ROW_ID]) for u in r.result.get("unexpected_index_list") or []))
            count = r.result.get("unexpected_count")
            col = kw.get("column")
            checks.append(Check(cfg.type, col, level, bool(r.success), stops, count, ids, bound, detail))
    order = {(e["type"], e["kwargs"].get("column")): i for i, e in enumerate(suite["expectations"])}
    return sorted(checks, key=lambda c: order.get((c.type, c.column), len(order)))
