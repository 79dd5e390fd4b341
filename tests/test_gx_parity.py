"""medflow evaluates the expectation types it infers itself, in vectorised pandas (GX costs milliseconds per
expectation, minutes on a table of 2,000 columns). Here that evaluator is held to Great Expectations: on generated
tables and suites over every type and option it evaluates (nulls, bounds strict and inclusive or open, `mostly`,
value sets, regexes, numbers written as text), both give each expectation the same verdict, the same count of failing
values and the same failing rows."""

import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medflow.data import native_checks
from medflow.data.checks import run_suite
from medflow.data.columns import ROW_ID
from medflow.data.numbers import NUMBER_REGEX
from medflow.data.suite import DATE_REGEX

EXAMPLES = 400  # tables and suites; each holds 1-4 columns of 1-3 expectations, ~1,500 cases in all
CASES = 1000
# Text as tables hold it (missing words are already None): numbers in every spelling a reader meets, and not.
NUMBERISH = ["0", "1", "-2.5", "3.25", "1e3", "-1E-2", " 7", "8 ", ".5", "5.", "+4", "007", "1e500", "-1e500", "inf",
             "-Infinity", "NaN%", "1,234", "12 mg", "0x10", "abc", "1.2.3", "--1", "1e", "٣", "½"]  # fmt: skip
CATEGORIES = ["a", "b", "c", "A", " a", "ab", "é", "2024-01-05", "05/01/2024", "1"]
REGEXES = ["^a", "b$", "^[ab]+$", "[0-9]", DATE_REGEX, r"^\s"]
cases = {"n": 0}

maybe_mostly = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 0.8, 0.95, 1.0]), st.floats(0, 1))
bound = st.one_of(st.none(), st.integers(-3, 12).map(float), st.floats(-1e3, 1e3, allow_nan=False))


def _with_mostly(kwargs: dict, mostly) -> dict:
    return kwargs if mostly is None else {**kwargs, "mostly": mostly}


@st.composite
def column_case(draw, col: str, rows: int):
    numeric = draw(st.booleans())
    if numeric:
        written = st.one_of(st.sampled_from(NUMBERISH), st.integers(-5, 15).map(str),
                            st.floats(-1e4, 1e4, allow_nan=False).map(repr))  # fmt: skip
    else:
        written = st.sampled_from(CATEGORIES)
    values = draw(st.lists(st.one_of(st.none(), written), min_size=rows, max_size=rows))
    exps = []
    for type_ in draw(
        st.lists(st.sampled_from(["null", "regex", "set", "between"]), min_size=1, max_size=3, unique=True)
    ):
        mostly = draw(maybe_mostly)
        if type_ == "null":
            kw = {"column": col}
            exps.append(("expect_column_values_to_not_be_null", _with_mostly(kw, mostly)))
        elif type_ == "regex":
            regex = NUMBER_REGEX if numeric else draw(st.sampled_from(REGEXES))
            exps.append(("expect_column_values_to_match_regex", _with_mostly({"column": col, "regex": regex}, mostly)))
        elif type_ == "set" and not numeric:
            value_set = draw(st.lists(st.sampled_from(CATEGORIES), max_size=5, unique=True))
            kw = {"column": col, "value_set": value_set}
            exps.append(("expect_column_values_to_be_in_set", _with_mostly(kw, mostly)))
        elif type_ == "between" and numeric:
            lo, hi = draw(bound), draw(bound)
            if lo is None and hi is None:
                lo = 0.0
            if lo is not None and hi is not None and lo > hi:
                lo, hi = hi, lo
            kw = {"column": col, "min_value": lo, "max_value": hi,
                  "strict_min": draw(st.booleans()), "strict_max": draw(st.booleans())}  # fmt: skip
            exps.append(("expect_column_values_to_be_between", _with_mostly(kw, mostly)))
    return values, "numeric" if numeric else "categorical", exps


@st.composite
def table_and_suite(draw):
    rows = draw(st.integers(1, 25))
    columns, kinds, exps = {}, {}, []
    for j in range(draw(st.integers(1, 4))):
        col = f"c{j}"
        columns[col], kinds[col], col_exps = draw(column_case(col, rows))
        level = draw(st.sampled_from(["row", "batch"]))
        exps += [{"type": t, "kwargs": kw, "meta": {"level": level}} for t, kw in col_exps]
    df = pd.DataFrame(columns, dtype=object)
    df[ROW_ID] = range(rows)
    meta = {"medflow": {"columns": {c: {"kind": k} for c, k in kinds.items()}}}
    return df, {"name": "parity", "expectations": exps, "meta": meta}


def _verdicts(checks):
    return [(c.type, c.column, c.success, c.stops, c.unexpected_count, tuple(sorted(c.row_ids))) for c in checks]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(table_and_suite())
def test_native_checks_give_great_expectations_verdicts(case):
    df, suite = case
    native = run_suite(df, suite)
    reference = run_suite(df, suite, gx_only=True)
    assert _verdicts(native) == _verdicts(reference), (df.to_dict("list"), suite["expectations"])
    cases["n"] += len(suite["expectations"])


def test_the_parity_run_covered_a_thousand_cases_and_fails_on_a_broken_check(monkeypatch):
    """Runs after the property (one file, one worker): it judged at least 1,000 expectations on tables, and a native
    check broken on purpose (a strict bound read as inclusive) is caught."""
    if cases["n"]:  # when this test is run alone, the count is not this test's to judge
        assert cases["n"] >= CASES
    df = pd.DataFrame({"x": ["1", "2", "3", None], ROW_ID: range(4)}, dtype=object)
    exp = {"column": "x", "min_value": 1.0, "max_value": 3.0, "strict_min": True, "strict_max": False}
    suite = {"name": "p", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": exp}],
             "meta": {"medflow": {"columns": {"x": {"kind": "numeric"}}}}}  # fmt: skip
    assert _verdicts(run_suite(df, suite)) == _verdicts(run_suite(df, suite, gx_only=True))
    source = re.sub(r"np\.where\(strict_lo, x <= lo, x < lo\)", "x < lo", _batched_source())
    namespace = dict(vars(native_checks))
    exec(compile(source, native_checks.__file__, "exec"), namespace)  # noqa: S102 - the module's own function, mutated
    monkeypatch.setattr(native_checks, "batched", namespace["batched"])
    with pytest.raises(AssertionError):
        assert _verdicts(run_suite(df, suite)) == _verdicts(run_suite(df, suite, gx_only=True))


def _batched_source() -> str:
    import inspect

    return inspect.getsource(native_checks.batched)
