"""validate writes Great Expectations Data Docs: the suite's expectations and the failing counts, never a value. A
table is validated once against a suite inferred from its clean version, with distinctive values seeded in rows that
fail: a nine-digit age (out of range), text where bmi holds numbers, a site no suite knows."""

import json
import re
import shutil
import time

import pandas as pd
import pytest
from cohort import cohort_params

from medflow.data import data_docs
from medflow.data.checks import run_suite
from medflow.data.columns import ROW_ID
from medflow.data.synthetic import synthetic_cohort
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate

SEEDS = {"age": "918273645", "bmi": "Zq-Quokka-4471", "site": "Wx-Narwhal-Vale"}
SEEDED_ROWS = (3, 5, 8)

pytestmark = pytest.mark.usefixtures("salted")


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Paths:
    paths = Paths(root=tmp_path_factory.mktemp("docs"))
    paths.data_dir.mkdir(parents=True)
    df = synthetic_cohort()
    df.to_csv(paths.data_dir / "cohort.csv", index=False)
    validate.run(cohort_params(data_docs=True), paths)  # infers the suite from the clean table
    df = df.astype(object)
    for row, (col, value) in zip(SEEDED_ROWS, SEEDS.items(), strict=True):
        df.loc[row, col] = value
    df.to_csv(paths.data_dir / "cohort.csv", index=False)
    validate.run(cohort_params(data_docs=True), paths)
    return paths


def _failed(paths: Paths) -> dict[str, int]:
    report = json.loads((paths.step_dir("validate") / "report.json").read_text())
    return {f"{e['column']}: {e['type']}": e["unexpected_count"] for e in report["expectations"] if not e["success"]}


def test_data_docs_hold_no_value_of_the_table(validated):
    docs = validated.data_docs
    files = [f for f in docs.rglob("*") if f.is_file()]
    assert (docs / "index.html") in files and len(list(docs.glob("validations/cohort/**/*.html"))) == 1
    # The seeds are in the source and their rows failed: GX would have listed them as unexpected values.
    assert {"age: expect_column_values_to_be_between", "site: expect_column_values_to_be_in_set"} <= set(
        _failed(validated)
    )
    for f in files:
        data = f.read_bytes()
        for value in SEEDS.values():
            assert value.encode() not in data, (f, value)


def test_the_validation_page_shows_each_expectation_and_the_failing_counts(validated):
    page = next(validated.data_docs.glob("validations/cohort/**/*.html")).read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    suite = json.loads(validated.suite("cohort").read_text())
    for column in {e["kwargs"]["column"] for e in suite["expectations"] if "column" in e["kwargs"]}:
        assert column in text
    for rule, count in _failed(validated).items():
        assert f"{count} unexpected values found" in text, rule


@pytest.mark.full  # a browser: `make test`, not `make test-fast`
def test_chromium_opens_the_docs_and_finds_the_failures_and_no_value(validated):
    """Offline, as the test machine is: the index links to the validation page without a script from a CDN."""
    from selenium.webdriver.common.by import By
    from test_readme import chrome

    started = time.perf_counter()
    browser = chrome()
    try:
        browser.get((validated.data_docs / "index.html").as_uri())
        browser.find_element(By.CSS_SELECTOR, "a[href*='validations/cohort/']").click()
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Expectation Suite: cohort" in body and "Status: Failed" in body
        assert "must be greater than or equal to" in body and "must belong to this set" in body
        for rule, count in _failed(validated).items():
            assert f"{count} unexpected values found" in body, rule
        for value in SEEDS.values():
            assert value not in browser.page_source
    finally:
        browser.quit()
    assert time.perf_counter() - started < 30


def test_a_wide_suite_shows_its_failures_first_and_counts_every_check(tmp_path, monkeypatch):
    df = pd.DataFrame({"alpha": ["1", "2", "x"], "beta": ["1", None, "3"], "gamma": ["5", "6", "7"], ROW_ID: [0, 1, 2]})
    exps = [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}, "meta": {"level": "row"}}
            for c in ("alpha", "beta", "gamma")]  # fmt: skip
    exps.append({"type": "expect_column_values_to_be_between", "kwargs": {"column": "gamma", "max_value": 6.0}})
    kinds = {c: {"kind": "numeric"} for c in ("alpha", "beta", "gamma")}
    suite = {"name": "wide", "expectations": exps, "meta": {"medflow": {"columns": kinds}}}
    checks = run_suite(df, suite)
    assert [c.success for c in checks] == [True, False, True, False]
    monkeypatch.setattr(data_docs, "SHOWN", 2)
    data_docs.write(tmp_path, suite, checks, "wide")
    page = next(tmp_path.glob("validations/wide/**/*.html")).read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Evaluated Expectations 4 Successful Expectations 2 Unsuccessful Expectations 2" in text
    assert text.count("unexpected values found") == 2 and "beta" in text and "alpha" not in text
    assert "4 checks, 2 shown here" in next(tmp_path.glob("expectations/*.html")).read_text()


def _page_text(paths: Paths) -> str:
    """The validation page's text, less its run time."""
    page = next(paths.data_docs.glob("validations/cohort/**/*.html")).read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", page, flags=re.S)))
    return re.sub(r"\d{4}-\d\d-\d\d[T ][\d:.]+(Z| UTC)", "<time>", text)


def _again(validated: Paths, root, streamed: bool, data_docs: bool) -> Paths:
    """validated's table and suite validated once more in a new project at root, in chunks of 97 rows if streamed."""
    paths = Paths(root=root)
    paths.data_dir.mkdir(parents=True)
    paths.expectations_dir.mkdir()
    shutil.copy(validated.data_dir / "cohort.csv", paths.data_dir / "cohort.csv")
    shutil.copy(validated.suite("cohort"), paths.suite("cohort"))
    raw = cohort_params(data_docs=data_docs).as_dict()
    raw["validate"] |= {"stream_above_mb": 0, "chunk_rows": 97} if streamed else {}
    validate.run(from_dict(raw), paths)
    return paths


def test_a_streamed_table_gets_the_pages_of_the_whole_table(validated, tmp_path):
    """Chunk by chunk, the counts on the pages are those of the table validated in one piece."""
    paths = _again(validated, tmp_path, streamed=True, data_docs=True)
    assert _page_text(paths) == _page_text(validated)


@pytest.mark.parametrize("streamed", [False, True])
def test_without_data_docs_validate_writes_the_same_report_and_no_pages(validated, tmp_path, streamed):
    paths = _again(validated, tmp_path, streamed=streamed, data_docs=False)
    assert not paths.data_docs.exists()
    assert _failed(paths) == _failed(validated)
