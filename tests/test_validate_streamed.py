"""validate of a table file larger than validate.stream_above_mb: two passes of chunk_rows rows, the suite and the
screens reading a uniform sample, every row checked. Forced here with stream_above_mb=0 on small tables."""

import filecmp
import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cohort import cohort_params

from medflow.data.sources import SourceError
from medflow.data.suite import ValidationFailed
from medflow.data.synthetic import synthetic_cohort
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate
from medflow.validation import streamed as streaming

SAME = ["quarantine.csv", "report.json", "columns.json"]


pytestmark = pytest.mark.usefixtures("salted")


@pytest.fixture(scope="module")
def cohort():
    return synthetic_cohort()


def _params(streamed: bool, chunk_rows: int = 97, sample_rows: int = 10**6, **data):
    raw = cohort_params(**data).as_dict()
    if streamed:
        raw["validate"] |= {"stream_above_mb": 0, "chunk_rows": chunk_rows, "sample_rows": sample_rows}
    return from_dict(raw)


def _project(root, df: pd.DataFrame, suite_from: Paths | None = None, name: str = "cohort.csv") -> Paths:
    paths = Paths(root=root)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        df.astype("string").to_parquet(paths.data_dir / name, index=False)
    else:
        df.to_csv(paths.data_dir / name, index=False)
    if suite_from is not None:
        paths.expectations_dir.mkdir(exist_ok=True)
        shutil.copy(suite_from.suite("cohort"), paths.suite("cohort"))
    return paths


@pytest.fixture(scope="module")
def in_memory(tmp_path_factory, cohort):
    paths = _project(tmp_path_factory.mktemp("memory"), cohort)
    return paths, validate.run(_params(False), paths)


def _same_outputs(a: Paths, b: Paths, files=SAME) -> None:
    va, vb = pd.read_parquet(a.valid_rows), pd.read_parquet(b.valid_rows)
    pd.testing.assert_frame_equal(va, vb)
    for name in files:
        fa, fb = a.step_dir("validate") / name, b.step_dir("validate") / name
        if name == "report.json":  # names the source file, which may differ
            assert json.loads(fa.read_text()) | {"source": ""} == json.loads(fb.read_text()) | {"source": ""}
        else:
            assert filecmp.cmp(fa, fb, shallow=False), name


@pytest.mark.parametrize("name", ["cohort.csv", "cohort.parquet"])
def test_a_table_streamed_in_chunks_validates_exactly_as_in_memory(in_memory, cohort, tmp_path, name):
    paths = _project(tmp_path, cohort, name=name)
    summary = validate.run(_params(True, source=f"data/{name}"), paths)
    streamed = summary.pop("streamed")
    assert streamed["chunks"] == -(-len(cohort) // 97) and streamed["sample_rows"] == len(cohort)
    _same_outputs(in_memory[0], paths, [*SAME, "profile/profile.md"])
    suites = [json.loads(p.suite("cohort").read_text()) for p in (paths, in_memory[0])]
    suites[0]["meta"]["medflow"]["source"] = "data/cohort.csv"
    assert suites[0] == suites[1]
    want = in_memory[1] | {"source": f"data/{name}"}
    assert summary == want
    assert not list(paths.step_dir("validate").glob("*.part"))


def test_every_row_is_checked_when_only_a_sample_is_read(in_memory, cohort, tmp_path):
    paths = _project(tmp_path, cohort, suite_from=in_memory[0])
    summary = validate.run(_params(True, chunk_rows=64, sample_rows=50), paths)
    # The suite given, only the screens and the profile read the sample: every row gets the same verdict.
    _same_outputs(in_memory[0], paths)
    assert summary["rows_quarantined"] == in_memory[1]["rows_quarantined"] > 0
    assert summary["quarantine_reasons"] == in_memory[1]["quarantine_reasons"]
    assert summary["streamed"]["sample_rows"] == 50
    md = (paths.step_dir("validate") / "profile" / "profile.md").read_text()
    assert f"(a uniform sample of the {summary['rows_valid']} valid rows)" in md


def test_the_sample_is_the_same_rows_whatever_the_chunk_size(cohort, tmp_path):
    picked = []
    for rows in (10, 333):
        paths = _project(tmp_path / str(rows), cohort)
        sample, totals = streaming.survey([paths.data_dir / "cohort.csv"], "t", _params(True).data,
                                          _params(True, chunk_rows=rows, sample_rows=40).validate_, 0)  # fmt: skip
        picked.append(sample["_row_id"].tolist())
        assert totals.rows == len(cohort)
    assert picked[0] == picked[1] and len(picked[0]) == 40 and picked[0] == sorted(picked[0])


def test_a_suite_inferred_from_a_sample_takes_its_sets_and_counts_from_every_row(tmp_path):
    rng = np.random.default_rng(1)
    n = 3000
    df = pd.DataFrame({
        "mrn": [f"P{i // 2:05d}" for i in range(n)],
        "age": rng.integers(18, 90, n).astype(str),
        "site": rng.choice(["north", "south"], n).astype(object),
        "outcome": rng.choice(["disease", "healthy"], n).astype(object),
    })  # fmt: skip
    df.loc[[2100, 2700], "site"] = "island"  # two rows: pooled as <other> in the set, yet rarely sampled
    df.loc[2500, "outcome"] = "rare"
    df.loc[rng.choice(n, 300, replace=False), "age"] = np.nan
    params = {"source": "data/cohort.csv", "identifiers": []}
    memory, streamed = _project(tmp_path / "m", df), _project(tmp_path / "s", df)
    validate.run(_params(False, **params), memory)
    summary = validate.run(_params(True, chunk_rows=500, sample_rows=200, **params), streamed)
    suites = [json.loads(p.suite("cohort").read_text()) for p in (memory, streamed)]

    def kwargs(suite, type_):
        return {e["kwargs"].get("column"): e["kwargs"] for e in suite["expectations"] if e["type"] == type_}

    for type_ in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_null",
                  "expect_table_row_count_to_be_between"):  # fmt: skip
        assert kwargs(suites[1], type_) == kwargs(suites[0], type_), type_
    sets = kwargs(suites[1], "expect_column_values_to_be_in_set")
    # Counted on every row, the rare site is pooled (a sample without it would leave the set closed), never named.
    assert sets["site"]["value_set"] == ["north", "south", "<other>"] and "rare" in sets["outcome"]["value_set"]
    meta = suites[1]["meta"]["medflow"]
    assert meta["reference_rows"] == n and meta["sampled_rows"] == 200
    assert meta["columns"] == suites[0]["meta"]["medflow"]["columns"]
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"] == n


CHANGES = {
    "nulls-bunched-in-one-chunk": lambda d: d.assign(bmi=d["bmi"].where(d.index >= 60)),
    "null-rate-rose": lambda d: d.assign(bmi=d["bmi"].where(d.index % 2 > 0)),
    "too-few-rows": lambda d: d.head(40),
    "unseen-target-late": lambda d: d.assign(outcome=d["outcome"].where(d.index < len(d) - 3, "maybe")),
    "numeric-became-text": lambda d: d.assign(glucose=np.where(np.arange(len(d)) % 5, "high", "90")),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_batch_checks_of_a_streamed_table_are_judged_on_the_whole_table(in_memory, cohort, tmp_path, change):
    """Each chunk alone would pass or fail some of these differently: a chunk of 97 rows holding 60 missing BMIs
    fails the null rate that the table as a whole meets."""
    outcomes = []
    for streamed in (False, True):
        paths = _project(tmp_path / str(streamed), CHANGES[change](cohort), suite_from=in_memory[0])
        try:
            outcomes.append(("passed", validate.run(_params(streamed, sample_rows=60), paths)["rows_valid"]))
        except ValidationFailed as exc:
            outcomes.append(("failed", str(exc)))
            assert not paths.valid_rows.exists() and not list(paths.step_dir("validate").glob("*.part"))
        outcomes[-1] += ((paths.step_dir("validate") / "report.json").read_text(),)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == ("passed" if change == "nulls-bunched-in-one-chunk" else "failed")


def test_a_chunk_writing_a_columns_numbers_another_way_stops_the_run(cohort, tmp_path):
    df = cohort.copy()
    bmi = pd.to_numeric(df["bmi"], errors="coerce").round(1).astype(str)
    df["bmi"] = bmi.str.replace(".", ",", regex=False).where(df.index < 1045, bmi + "%")
    paths = _project(tmp_path, df)
    params = _params(True, chunk_rows=209, sample_rows=50)  # the last chunk: rows 1045-1051
    sample, _ = streaming.survey([paths.data_dir / "cohort.csv"], "t", params.data, params.validate_, params.seed)
    assert sample["_row_id"].max() < 1045  # the sample holds decimal commas only; the last chunk, percent signs
    with pytest.raises(ValidationFailed) as err:
        validate.run(params, paths)
    message = str(err.value)
    assert message.startswith("data/cohort.csv: column 'bmi' mixes number formats: ")
    assert "in data rows 1046-1052 are written with percent signs, the table's sample with decimal commas" in message
    assert "\n" not in message
    assert not paths.valid_rows.exists() and not list(paths.step_dir("validate").glob("*"))


def test_a_column_mixing_two_number_formats_is_refused_in_memory_too(cohort, tmp_path):
    bmi = pd.to_numeric(cohort["bmi"], errors="coerce").round(1).astype(str)
    df = cohort.assign(bmi=bmi.str.replace(".", ",", regex=False).where(cohort.index % 3 > 0, bmi + "%"))
    with pytest.raises(ValidationFailed, match="column 'bmi' mixes number formats"):
        validate.run(_params(False), _project(tmp_path, df))


def test_decimal_commas_are_converted_and_counted_in_every_chunk(in_memory, cohort, tmp_path):
    df = cohort.assign(bmi=cohort["bmi"].astype(str).str.replace(".", ",", regex=False).where(cohort["bmi"].notna()))
    memory, streamed = _project(tmp_path / "m", df), _project(tmp_path / "s", df)
    want = validate.run(_params(False), memory)["columns"]["converted"]
    got = validate.run(_params(True, sample_rows=100), streamed)["columns"]["converted"]
    assert got == want and list(got) == ["bmi"]
    assert pd.read_parquet(streamed.valid_rows)["bmi"].equals(pd.read_parquet(memory.valid_rows)["bmi"])


def test_an_expectation_left_to_gx_is_refused_when_the_table_streams(in_memory, cohort, tmp_path):
    paths = _project(tmp_path, cohort, suite_from=in_memory[0])
    suite = json.loads(paths.suite("cohort").read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_unique", "kwargs": {"column": "site"}})
    paths.suite("cohort").write_text(json.dumps(suite))
    with pytest.raises(ValidationFailed) as err:
        validate.run(_params(True), paths)
    assert str(err.value).startswith(
        "expectations/cohort.json: expectation type(s) ['expect_column_values_to_be_unique'] are evaluated by Great "
        "Expectations on the whole table at once"
    )
    assert "raise validate.stream_above_mb" in str(err.value) and not paths.valid_rows.exists()


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
@pytest.mark.parametrize("exclude", [[], ["site"]], ids=["nothing-excluded", "a-column-excluded"])
def test_a_line_with_extra_fields_deep_in_the_file_is_one_line_and_leaves_nothing(cohort, tmp_path, streamed, exclude):
    """An unquoted comma (Smith, John) shifts the rest of its row into the wrong columns: refused, never read."""
    paths = _project(tmp_path, cohort)
    lines = (paths.data_dir / "cohort.csv").read_text().splitlines()
    lines[800] += ",1,2,3"
    (paths.data_dir / "cohort.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as err:
        validate.run(_params(streamed, exclude=exclude), paths)
    assert str(err.value).endswith(
        "cannot be parsed as comma-delimited text (Expected 13 fields, line 801, saw 16); check data.delimiter and "
        "quoting"
    )
    assert not list(paths.step_dir("validate").glob("*"))


def test_a_gzipped_csv_streams_like_the_plain_one(in_memory, cohort, tmp_path):
    paths = Paths(root=tmp_path)
    paths.data_dir.mkdir()
    with gzip.open(paths.data_dir / "cohort.csv.gz", "wt") as f:
        cohort.to_csv(f, index=False)
    validate.run(_params(True, source="data/cohort.csv.gz"), paths)
    _same_outputs(in_memory[0], paths, ["quarantine.csv", "columns.json"])


def test_a_file_that_changes_between_the_passes_stops_the_run_and_leaves_nothing(cohort, tmp_path, monkeypatch):
    paths = _project(tmp_path, cohort)
    survey = streaming.survey

    def then_truncated(files, *args):
        found = survey(files, *args)
        (path,) = files
        path.write_text("\n".join(path.read_text().splitlines()[:500]) + "\n")  # an export still being written
        return found

    monkeypatch.setattr(streaming, "survey", then_truncated)
    with pytest.raises(ValidationFailed) as err:
        validate.run(_params(True), paths)
    assert str(err.value) == (
        f"data/cohort.csv: {len(cohort)} rows on the first pass, 499 on the second: the file changed while it was "
        "validated; run again once it is written"
    )
    assert not list(paths.step_dir("validate").glob("*"))


def _both(tmp_path, df: pd.DataFrame, suite_from: Paths | None = None, name: str = "cohort.csv", write=None, **kw):
    """The outcome (valid rows and reasons, or the error) of the table read whole and streamed, and their projects."""
    out = []
    for streamed in (False, True):
        paths = _project(tmp_path / str(streamed), df, suite_from, name)
        if write is not None:
            write(paths.data_dir / name)
        try:
            s = validate.run(_params(streamed, source=f"data/{name}", **kw), paths)
            out.append((s["rows_valid"], s["quarantine_reasons"], pd.read_parquet(paths.valid_rows)))
        except (ValidationFailed, SourceError) as exc:
            out.append(str(exc))
    return out


def test_a_parquet_integer_column_with_nulls_reads_alike_in_every_chunk(cohort, tmp_path):
    """A Spark or Arrow export (no pandas metadata): an int64 column turned float only in frames holding a null, so
    one patient got two keys, one label two spellings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {c: pa.array([None if pd.isna(v) else str(v) for v in cohort[c]], pa.string()) for c in cohort}
    cols["mrn"] = pa.array([None if i == 500 else int(str(v)[3:]) for i, v in enumerate(cohort["mrn"])], pa.int64())
    table = pa.table(cols)
    memory, streamed = _both(tmp_path, cohort, name="cohort.parquet", write=lambda p: pq.write_table(table, p))
    assert memory[0] == streamed[0] and memory[1] == streamed[1]
    pd.testing.assert_frame_equal(memory[2], streamed[2])
    assert streamed[2]["_patient_key"].nunique() == cohort["mrn"].iloc[streamed[2]["_row_id"]].nunique()


def test_numbers_with_a_unit_in_another_case_or_few_decimals_in_one_chunk_read_as_in_memory(cohort, tmp_path):
    glucose = pd.to_numeric(cohort["glucose"], errors="coerce")
    bmi = pd.to_numeric(cohort["bmi"], errors="coerce")
    df = cohort.assign(
        glucose=(glucose.astype(str) + np.where(cohort.index < 900, " mg", " MG")).where(glucose.notna()),
        # "22,300" alone reads as thousands too: the last chunk holds only such values
        bmi=bmi.map(lambda v: f"{v:.2f}").str.replace(".", ",").where(bmi.notna()),
    )
    df.loc[df.index[-2:], "bmi"] = ["22,300", "20,400"]
    memory, streamed = _both(tmp_path, df, chunk_rows=105, sample_rows=100)  # the last chunk: those 2 rows
    assert not isinstance(memory, str) and memory[:2] == streamed[:2]
    pd.testing.assert_frame_equal(memory[2], streamed[2])
    assert streamed[2]["bmi"].iloc[-2:].tolist() == [22.3, 20.4]


def test_two_expectations_of_one_type_on_a_column_are_each_judged_by_their_own_bounds(in_memory, cohort, tmp_path):
    paths = in_memory[0]
    suite = json.loads(paths.suite("cohort").read_text())
    wide = {"column": "age", "min_value": -1e12, "max_value": 1e12}
    suite["expectations"].append({"type": "expect_column_values_to_be_between", "kwargs": wide,
                                  "meta": {"level": "batch"}})  # fmt: skip
    edited = tmp_path / "suite"
    edited_paths = Paths(root=edited)
    edited_paths.expectations_dir.mkdir(parents=True)
    edited_paths.suite("cohort").write_text(json.dumps(suite))
    memory, streamed = _both(tmp_path, cohort, suite_from=edited_paths)
    assert not isinstance(streamed, str) and memory[:2] == streamed[:2]
    assert streamed[1]["age: expect_column_values_to_be_between"] == 2


def test_a_gzipped_csv_gets_the_plain_files_delimiter_encoding_and_exclude_checks(cohort, tmp_path):
    paths = Paths(root=tmp_path)
    paths.data_dir.mkdir()
    with gzip.open(paths.data_dir / "cohort.csv.gz", "wt", encoding="latin-1") as f:
        cohort.to_csv(f, index=False, sep=";")
    for streamed in (False, True):
        with pytest.raises(SourceError, match=r"data.exclude names column\(s\) \['sight'\] that are not in the file"):
            validate.run(_params(streamed, source="data/cohort.csv.gz", exclude=["sight"], encoding="latin-1"), paths)
        summary = validate.run(_params(streamed, source="data/cohort.csv.gz", exclude=["site"], encoding="latin-1"),
                               paths)  # fmt: skip
        assert summary["rows_in"] == len(cohort) and "site" not in pd.read_parquet(paths.valid_rows)


def _by_time(streamed: bool):
    raw = _params(streamed).as_dict()
    raw["split"] = {"by": "time", "time_column": "visit_date"}
    return from_dict(raw)


def test_rows_the_split_cannot_place_are_validates_quarantine_and_its_screens_judge_them(cohort, tmp_path):
    """split.by=time: a row without a visit date (or with one that reads as no date) may belong to the held-out era.
    validate quarantines it with its reason, in memory and streamed alike, so that it counts toward
    validate.max_quarantine with the other quarantined rows, and the screen for a quarantine concentrated on the
    sickest patients sees it: rows without a date that are all the highest glucose stop the run."""
    df = cohort.copy()
    df.loc[df.index[::50], "visit_date"] = None
    df.loc[df.index[1::50], "visit_date"] = "unknown"
    outputs = []
    for streamed in (False, True):
        paths = _project(tmp_path / f"spread-{streamed}", df)
        summary = validate.run(_by_time(streamed), paths)
        held = pd.read_csv(paths.step_dir("validate") / "quarantine.csv")
        undated = held[held["reason"].str.contains("visit_date: split_value_present", regex=False)]
        assert set(undated["_row_id"]) == set(df.index[::50]) | set(df.index[1::50])
        assert "(split.by=time needs a value on every row)" in undated["reason"].iloc[0]
        assert summary["rows_quarantined"] == len(held) and summary["rows_valid"] + len(held) == len(df)
        outputs.append(paths)
    _same_outputs(*outputs)

    sickest = df.copy()
    glucose = pd.to_numeric(sickest["glucose"], errors="coerce")
    sickest.loc[glucose >= glucose.quantile(0.95), "visit_date"] = None  # fewer than validate.max_quarantine's tenth
    for streamed in (False, True):
        paths = _project(tmp_path / f"sickest-{streamed}", sickest)
        with pytest.raises(ValidationFailed, match=r"quarantine takes \d+ of 1052 rows .*concentrated where 'glucose'"):
            validate.run(_by_time(streamed), paths)
        assert not paths.valid_rows.exists()


def test_a_site_split_quarantines_rows_without_a_site_and_reads_every_chunk_as_the_whole(cohort, tmp_path):
    """split.by=site on a categorical column: its rows without a site are quarantined by rule, so they form no
    group of the concentration screen (a few of them must not stop the run). A time column is read value by value:
    offsets either side of a clock change are one column, and a chunk of numbers reads as the whole table does."""
    from medflow.data.split_values import split_values, without_value

    df = cohort.copy()
    df.loc[df.index[3:400:50], "site"] = None  # 8 rows, under validate.max_quarantine
    for streamed in (False, True):
        raw = _params(streamed).as_dict()
        raw["split"] = {"by": "site", "site_column": "site", "test_sites": ["north"]}
        paths = _project(tmp_path / f"site-{streamed}", df)
        validate.run(from_dict(raw), paths)
        held = pd.read_csv(paths.step_dir("validate") / "quarantine.csv")
        assert set(held.loc[held["reason"].str.contains("site: split_value_present"), "_row_id"]) == set(
            df.index[3:400:50]
        )
    # A month column (a category, not a date, to validate) with values no reading places: those rows too.
    months = cohort.assign(admitted=cohort["visit_date"].str[:7])
    months.loc[months.index[5:400:50], "admitted"] = "unknown"
    for streamed in (False, True):
        raw = _params(streamed).as_dict()
        raw["split"] = {"by": "time", "time_column": "admitted"}
        paths = _project(tmp_path / f"month-{streamed}", months)
        assert validate.run(from_dict(raw), paths)["rows_quarantined"] >= 8
    clock = pd.Series(["2024-03-30T10:00:00+01:00", "2024-04-01T10:00:00+02:00", None, "unknown"], name="admitted")
    assert without_value(clock, "time").tolist() == [False, False, True, True]
    assert np.diff(split_values(clock, "time")[:2])[0] > 0
    mixed = pd.Series(["43831", "43832", "2020-01-01", "2020-01-02"], name="admitted")
    assert without_value(mixed[:2], "time").tolist() == without_value(mixed, "time")[:2].tolist() == [False, False]
    with pytest.raises(ValueError, match=r"column 'admitted', rule: split.by=time reads one kind of time; 2 values"):
        split_values(mixed, "time")
