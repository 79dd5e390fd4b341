"""medflow evaluates the expectation types it infers itself, in vectorised pandas (GX costs milliseconds per
expectation, minutes on a table of 2,000 columns). Here that evaluator is held to Great Expectations: on generated
tables and suites over every type and option it evaluates (nulls, bounds strict and inclusive or open, `mostly`, value
sets, regexes, numbers written as text), both give each expectation the same verdict, the same count of failing
values and the same failing rows.

GX spends ~20 ms on a call and ~10 ms on an expectation, so each generated example holds several tables of one row
count: medflow evaluates each table alone, as validate does, and GX evaluates them side by side in one call."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from medflow.data import native_checks
from medflow.data.checks import run_suite
from medflow.data.columns import ROW_ID
from medflow.data.numbers import NUMBER_REGEXES
from medflow.data.suite import DATE_REGEX

EXAMPLES = 220  # examples of 5-8 tables each: at least 1,100 tables and suites
TABLES = 1000
# Text as tables hold it (missing words are already None): numbers in every spelling a reader meets, and not.
NUMBERISH = ["0", "1", "-2.5", "3.25", "1e3", "-1E-2", " 7", "8 ", ".5", "5.", "+4", "007", "1e500", "-1e500", "inf",
             "-Infinity", "NaN%", "1,234", "12 mg", "0x10", "abc", "1.2.3", "--1", "1e", "٣", "٣.٥", "½", "１",
             "1_000", "\u00a07", "+.5", "-.5e1", "1e+3", "\t8"]  # fmt: skip
CATEGORIES = ["a", "b", "c", "A", " a", "ab", "é", "2024-01-05", "05/01/2024", "1"]
REGEXES = ["^a", "b$", "^[ab]+$", "[0-9]", DATE_REGEX, r"^\s", *NUMBER_REGEXES]
TYPES = {
    "null": "expect_column_values_to_not_be_null",
    "regex": "expect_column_values_to_match_regex",
    "set": "expect_column_values_to_be_in_set",
    "between": "expect_column_values_to_be_between",
}
bound = st.one_of(st.none(), st.integers(-3, 12).map(float), st.floats(-1e3, 1e3, allow_nan=False))


@st.composite
def mostly(draw, considered: int):
    """None (every value must pass), a round or any share, or the share of k of the values considered, written both
    ways a program computes it ((n - c) / n and 1 - c / n differ in the last bit for 116 pairs below 26)."""
    k = draw(st.integers(0, considered))
    n = max(considered, 1)
    return draw(
        st.one_of(st.none(), st.sampled_from([0.0, 0.5, 0.8, 0.95, 1.0]), st.floats(0, 1),
                  st.sampled_from([(n - k) / n, 1 - k / n]))
    )  # fmt: skip


@st.composite
def column_case(draw, col: str, rows: int):
    numeric = draw(st.booleans())
    if numeric:
        written = st.one_of(st.sampled_from(NUMBERISH), st.integers(-5, 15).map(str),
                            st.floats(-1e4, 1e4, allow_nan=False).map(repr))  # fmt: skip
    else:
        written = st.sampled_from(CATEGORIES)
    values = draw(st.lists(st.one_of(st.none(), written), min_size=rows, max_size=rows))
    present = sum(v is not None for v in values)
    exps = []
    for type_ in draw(st.lists(st.sampled_from(list(TYPES)), min_size=1, max_size=2, unique=True)):
        kw = {"column": col}
        if type_ == "regex":
            kw["regex"] = draw(st.sampled_from(REGEXES))
        elif type_ == "set":
            # A numeric column is checked as the numbers it parses to.
            values_of = st.integers(-3, 12).map(float) if numeric else st.sampled_from(CATEGORIES)
            kw["value_set"] = draw(st.lists(values_of, max_size=5, unique=True))
        elif type_ == "between":
            if not numeric:
                continue  # bounds on text: GX and pandas both refuse to compare, each in its own words
            # A bound that some value sits on, as often as not: where strict and inclusive part.
            x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            on = sorted(set(x[np.isfinite(x)].tolist()))
            edge = st.one_of(bound, st.sampled_from(on)) if on else bound
            lo, hi = draw(edge), draw(edge)
            if lo is None and hi is None:
                lo = 0.0
            if lo is not None and hi is not None and lo > hi:
                lo, hi = hi, lo
            kw |= {"min_value": lo, "max_value": hi, "strict_min": draw(st.booleans()),
                   "strict_max": draw(st.booleans())}  # fmt: skip
        share = draw(mostly(rows if type_ == "null" else present))
        exps.append((TYPES[type_], kw if share is None else {**kw, "mostly": share}))
    return values, "numeric" if numeric else "categorical", exps


@st.composite
def table_and_suite(draw, rows: int):
    columns, kinds, exps = {}, {}, []
    for j in range(draw(st.integers(1, 3))):
        col = f"c{j}"
        columns[col], kinds[col], col_exps = draw(column_case(col, rows))
        level = draw(st.sampled_from(["row", "batch"]))
        exps += [{"type": t, "kwargs": kw, "meta": {"level": level}} for t, kw in col_exps]
    df = pd.DataFrame(columns, dtype=object)
    df[ROW_ID] = range(rows)
    meta = {"medflow": {"columns": {c: {"kind": k} for c, k in kinds.items()}}}
    return df, {"name": "parity", "expectations": exps, "meta": meta}


@st.composite
def tables_and_suites(draw):
    rows = draw(st.integers(1, 25))
    return draw(st.lists(table_and_suite(rows), min_size=5, max_size=8))


def _verdicts(checks, rename=lambda col: col):
    return [(c.type, rename(c.column), c.success, c.stops, c.unexpected_count, tuple(sorted(c.row_ids)))
            for c in checks]  # fmt: skip


def side_by_side(cases: list) -> tuple[pd.DataFrame, dict]:
    """The tables of one row count as one frame (table i's column c as t{i}_c) and their suites as one."""
    frames, exps, kinds = [], [], {}
    for i, (df, suite) in enumerate(cases):
        frames.append(df.drop(columns=ROW_ID).add_prefix(f"t{i}_"))
        for e in suite["expectations"]:
            exps.append({**e, "kwargs": {**e["kwargs"], "column": f"t{i}_{e['kwargs']['column']}"}})
        kinds |= {f"t{i}_{c}": k for c, k in suite["meta"]["medflow"]["columns"].items()}
    wide = pd.concat([*frames, cases[0][0][[ROW_ID]]], axis=1)
    return wide, {"name": "parity", "expectations": exps, "meta": {"medflow": {"columns": kinds}}}


def parity(how: settings, seen: list[int]):
    """The property, run with how; seen gets the number of tables of each example it judged."""

    @how
    @given(tables_and_suites())
    def native_checks_give_great_expectations_verdicts(cases):
        wide, suite = side_by_side(cases)
        reference = _verdicts(run_suite(wide, suite, gx_only=True))
        for i, (df, suite) in enumerate(cases):
            ours = [v for v in reference if v[1].startswith(f"t{i}_")]
            native = _verdicts(run_suite(df, suite), rename=lambda col, i=i: f"t{i}_{col}")
            assert native == ours, (df.to_dict("list"), suite["expectations"])
        seen.append(len(cases))

    return native_checks_give_great_expectations_verdicts


@pytest.mark.full  # 1,000 generated tables, each judged by GX too: `make test`, not `make test-fast`
def test_native_checks_give_great_expectations_verdicts():
    seen = []
    parity(settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck)), seen)()  # fmt: skip
    assert sum(seen) >= TABLES, f"{sum(seen)} tables and suites in {len(seen)} examples"


def _inclusive(batched):
    def broken(type_, kws, frame, parsed):
        return batched(type_, [{**kw, "strict_min": False, "strict_max": False} for kw in kws], frame, parsed)

    return broken


def _without_mostly(passes):
    def broken(kw, count, base):
        return passes({k: v for k, v in kw.items() if k != "mostly"}, count, base)

    return broken


@pytest.mark.parametrize(
    ("check", "breaking"),
    [("batched", _inclusive), ("passes", _without_mostly)],
    ids=["strict-bound-read-as-inclusive", "mostly-ignored"],
)
def test_the_property_fails_when_one_native_check_is_broken(monkeypatch, check, breaking):
    """The same property, with one native check broken on purpose, finds a table on which GX disagrees."""
    monkeypatch.setattr(native_checks, check, breaking(getattr(native_checks, check)))
    how = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                   suppress_health_check=list(HealthCheck))  # fmt: skip
    with pytest.raises(AssertionError):
        parity(how, [])()
