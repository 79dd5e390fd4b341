import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cohort import cohort_params

from medflow.data import sources
from medflow.data.checks import Check
from medflow.data.profile import (
    average_ranks,
    build_profile,
    numeric_associations,
    shown,
    univariate_auc,
    univariate_aucs,
)
from medflow.data.suite import ValidationFailed, infer_suite
from medflow.data.synthetic import synthetic_cohort
from medflow.params import DataParams, ValidateParams, from_dict
from medflow.paths import Paths
from medflow.privacy import classify
from medflow.steps import validate
from medflow.validation.quarantine import quarantine

PHI = ["mrn", "name", "dob", "phone", "visit_date"]


pytestmark = pytest.mark.usefixtures("salted")


def _project(root, df: pd.DataFrame, suite_from: Paths | None = None) -> Paths:
    paths = Paths(root=root)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(paths.data_dir / "cohort.csv", index=False)
    if suite_from is not None:
        paths.expectations_dir.mkdir(exist_ok=True)
        shutil.copy(suite_from.suite("cohort"), paths.suite("cohort"))
    return paths


@pytest.fixture(scope="module")
def cohort():
    return synthetic_cohort()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, cohort):
    paths = _project(tmp_path_factory.mktemp("cohort"), cohort)
    return paths, validate.run(cohort_params(), paths)


def _outputs(paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    held = pd.read_csv(paths.step_dir("validate") / "quarantine.csv", dtype=str, keep_default_na=False)
    return pd.read_parquet(paths.valid_rows), held


def _phi_values(df: pd.DataFrame) -> set[str]:
    return {v for c in PHI for v in df[c].dropna().astype(str)}


def test_first_run_infers_the_suite_and_quarantines_the_bad_rows(first_run, cohort):
    paths, summary = first_run
    assert summary["suite_created"] and paths.suite("cohort").exists()
    assert summary["suite"] == "expectations/cohort.json"
    assert summary["rows_in"] == len(cohort) == summary["rows_valid"] + summary["rows_quarantined"]
    _, held = _outputs(paths)
    by_value = {
        ("age", "999.0"): "age: expect_column_values_to_be_between [0, ",
        ("age", "-4.0"): "age: expect_column_values_to_be_between [0, ",
        ("bmi", "abc"): "bmi: expect_column_values_to_match_regex (not a number)",
        ("glucose", "n.d."): "glucose: expect_column_values_to_match_regex (not a number)",
        ("outcome", ""): "outcome: expect_column_values_to_not_be_null",
    }
    # quarantine.csv holds no text but numbers': a row is found again in the source by its row number.
    source = cohort.astype(str).fillna("").replace("nan", "")
    for (col, value), reason in by_value.items():
        rows = held[source[col].iloc[held["_row_id"].astype(int)].to_numpy() == value]
        assert len(rows) >= 1 and rows["reason"].str.startswith(reason).all(), (col, value)
    assert set(summary["quarantine_reasons"]) == {
        "age: expect_column_values_to_be_between",
        "bmi: expect_column_values_to_match_regex",
        "glucose: expect_column_values_to_match_regex",
        "outcome: expect_column_values_to_not_be_null",
    }
    assert sum(summary["quarantine_reasons"].values()) == summary["rows_quarantined"] == len(held)
    # A value rarer than small_count is pooled in the set, never named, and the suite accepts its own batch's.
    suite = json.loads(paths.suite("cohort").read_text())
    sets = {e["kwargs"].get("column"): e["kwargs"].get("value_set") for e in suite["expectations"]}
    assert sets["sex"] == ["F", "M", "<other>"] and "unknown?" not in paths.suite("cohort").read_text()
    assert (cohort["sex"] == "unknown?").sum() < 5 and "unknown?" in set(pd.read_parquet(paths.valid_rows)["sex"])
    kinds = json.loads((paths.step_dir("validate") / "columns.json").read_text())
    assert kinds == {
        "mrn": "patient_id", "name": "identifier", "dob": "identifier", "phone": "identifier",
        "visit_date": "text", "age": "numeric", "sex": "categorical", "smoker": "categorical",
        "site": "categorical", "bmi": "numeric", "glucose": "numeric", "systolic_bp": "numeric",
        "outcome": "target",
    }  # fmt: skip
    assert json.loads(paths.summary("validate").read_text()) == summary


def test_every_input_row_lands_in_exactly_one_output(first_run, cohort):
    paths, _ = first_run
    valid, held = _outputs(paths)
    ids_valid, ids_held = set(valid["_row_id"]), set(held["_row_id"].astype(int))
    assert not ids_valid & ids_held
    assert sorted(ids_valid | ids_held) == list(range(len(cohort))) == sorted([*valid["_row_id"], *ids_held])
    # Identifiers, dates and free text never leave validate; the patient id leaves as its salted key only.
    features = ["age", "sex", "smoker", "site", "bmi", "glucose", "systolic_bp", "outcome"]
    assert list(valid.columns) == ["_row_id", "_patient_key", *features]
    assert set(valid["_patient_key"]).isdisjoint(set(cohort["mrn"]))
    assert list(held.columns) == ["_row_id", "reason", "_patient_key", "age", "bmi", "glucose", "systolic_bp"]
    # Categories and the target keep their text exactly as read; numbers leave as the floats validate parsed, once.
    source = sources.read_table(paths.data_dir / "cohort.csv").iloc[valid["_row_id"]].reset_index(drop=True)
    kinds = json.loads((paths.step_dir("validate") / "columns.json").read_text())
    numeric = [c for c in features if kinds[c] == "numeric"]
    text = [c for c in features if c not in numeric]
    assert numeric == ["age", "bmi", "glucose", "systolic_bp"] and valid[text].equals(source[text])
    assert (valid[numeric].dtypes == "float64").all()
    pd.testing.assert_frame_equal(valid[numeric], source[numeric].apply(pd.to_numeric))


def test_suite_is_reinferred_byte_identical_and_holds_no_patient_values(first_run, cohort, tmp_path):
    paths, _ = first_run
    text = paths.suite("cohort").read_text()
    again = _project(tmp_path, cohort)
    validate.run(cohort_params(), again)
    assert again.suite("cohort").read_text() == text
    assert not {v for v in _phi_values(cohort) if v in text}
    suite = json.loads(text)
    assert suite["meta"]["medflow"]["columns"]["visit_date"]["kind"] == "text"
    assert validate.run(cohort_params(), again)["suite_created"] is False


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.rename(columns={"age": "agee"}), "missing columns ['age']; unexpected ['agee']"),
        (lambda d: d.drop(columns="bmi"), "missing columns ['bmi']; unexpected []"),
        (lambda d: d.assign(glucose=np.where(np.arange(len(d)) % 5, "high", "90")), "glucose: "),
        (lambda d: d.assign(outcome=d["outcome"].where(d.index % 50 > 0, "maybe")), "outcome: "),
        (lambda d: d.assign(bmi=d["bmi"].where(d.index % 2 > 0)), "not_be_null: bmi: "),
        (lambda d: d.head(40), "expect_table_row_count_to_be_between: 40 rows, expected ["),
    ],
    ids=["renamed", "dropped", "numeric-became-text", "unseen-target", "null-rate-rose", "too-few-rows"],
)
def test_batch_level_failures_stop_the_run_with_a_message_naming_them(first_run, cohort, tmp_path, change, named):
    paths = _project(tmp_path, change(cohort), suite_from=first_run[0])
    with pytest.raises(ValidationFailed) as err:
        validate.run(cohort_params(), paths)
    message = str(err.value)
    assert message.startswith("data/cohort.csv: 1 batch-level expectation(s) failed:")
    assert named in message
    report = json.loads((paths.step_dir("validate") / "report.json").read_text())
    assert not report["success"] and len(report["batch_failures"]) == 1
    assert not paths.valid_rows.exists()
    assert not {v for v in _phi_values(cohort) if v in message or v in json.dumps(report)}


def test_numeric_and_target_failures_name_the_rule(first_run, cohort, tmp_path):
    changed = cohort.assign(glucose="high", outcome=cohort["outcome"].replace("healthy", "well"))
    paths = _project(tmp_path, changed, suite_from=first_run[0])
    with pytest.raises(ValidationFailed, match="2 batch-level") as err:
        validate.run(cohort_params(), paths)
    n = len(cohort)
    assert f"match_regex: glucose: {n} of {n} non-null values do not parse as numbers" in str(err.value)
    assert "expect_column_values_to_be_in_set: outcome: " in str(err.value)


def test_editing_a_range_in_the_suite_quarantines_more_rows(first_run, cohort, tmp_path):
    paths = _project(tmp_path, cohort, suite_from=first_run[0])
    suite = json.loads(paths.suite("cohort").read_text())
    (between,) = [
        e for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "age"
    ]  # fmt: skip
    between["kwargs"]["max_value"] = 60
    paths.suite("cohort").write_text(json.dumps(suite))
    rule = "age: expect_column_values_to_be_between"
    # Most of the cohort is older than 60: such a quarantine would bias the table, and stops the run.
    with pytest.raises(ValidationFailed, match=rf"quarantine takes \d+ of {len(cohort)} rows .*{rule}"):
        validate.run(cohort_params(), paths)
    assert not paths.valid_rows.exists()
    params = cohort_params()
    params = params.model_copy(update={"validate_": params.validate_.model_copy(update={"max_quarantine": 1.0})})
    summary = validate.run(params, paths)
    age = pd.to_numeric(cohort["age"], errors="coerce")
    assert summary["quarantine_reasons"][rule] == int(((age > 60) | (age < 0)).sum())
    assert summary["rows_quarantined"] > first_run[1]["rows_quarantined"]
    _, held = _outputs(paths)
    assert held["reason"].str.contains(rf"{rule} \[0, 60\]").sum() == summary["quarantine_reasons"][rule]


def test_a_column_admitted_to_the_column_set_without_a_kind_stops_in_one_line(first_run, cohort, tmp_path):
    """A new export column named in the column set only would be dropped from valid.parquet unannounced."""
    paths = _project(tmp_path, cohort.assign(ward="A"), suite_from=first_run[0])
    suite = json.loads(paths.suite("cohort").read_text())
    (columns,) = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
    columns["kwargs"]["column_set"].append("ward")
    paths.suite("cohort").write_text(json.dumps(suite))
    with pytest.raises(ValidationFailed, match=r"^expectations/cohort.json: 1 column\(s\) .* no kind .*: ward\. ") as e:
        validate.run(cohort_params(), paths)
    assert "\n" not in str(e.value) and not paths.valid_rows.exists()
    suite["meta"]["medflow"]["columns"]["ward"] = {"kind": "categorical", "null_rate": 0.0}
    paths.suite("cohort").write_text(json.dumps(suite))
    validate.run(cohort_params(), paths)
    assert pd.read_parquet(paths.valid_rows)["ward"].eq("A").all()


def test_profile_holds_aggregates_only_and_suppresses_small_counts(first_run, cohort):
    paths, _ = first_run
    md = (paths.step_dir("validate") / "profile" / "profile.md").read_text()
    assert not {v for v in _phi_values(cohort) if v in md}
    assert "## Suspected leakage" in md
    for png in ("missingness.png", "target.png", "association.png"):
        assert (paths.step_dir("validate") / "profile" / png).stat().st_size > 1000

    df = pd.DataFrame(
        {"site": ["a"] * 20 + ["b"] * 3, "y": ["p", "n"] * 11 + ["p"], "mrn": [f"M{i}" for i in range(23)]}
    )
    kinds = {"site": "categorical", "y": "target", "mrn": "patient_id"}
    prof = build_profile(df, kinds, DataParams(target="y", positive_class="p"), ValidateParams())
    site, mrn = prof["columns"][0], prof["columns"][2]
    assert site["counts"] == {"a": "20", "<other>": "<5"}  # "b", in 3 rows, is not named
    assert mrn == {"name": "mrn", "kind": "patient_id", "missing": "0", "missing_rate": 0.0}
    assert shown(0, 5) == "0" and shown(4, 5) == "<5" and shown(5, 5) == "5"


def test_a_copy_of_the_label_stops_the_run_unless_accepted(cohort, tmp_path):
    leaky = cohort.assign(lab_flag=(cohort["outcome"] == "disease").astype(int))
    paths = _project(tmp_path, leaky)
    with pytest.raises(ValidationFailed) as err:
        validate.run(cohort_params(), paths)
    assert "'lab_flag' alone predicts 'outcome' with ROC-AUC 1.000" in str(err.value)
    assert "data.exclude=[lab_flag]" in str(err.value) and "validate.accept_leakage=[lab_flag]" in str(err.value)
    assert not paths.suite("cohort").exists() and not paths.valid_rows.exists()
    excluded = validate.run(cohort_params(exclude=["lab_flag"]), paths)
    assert excluded["columns"]["excluded"] == ["lab_flag"] and not excluded["leakage"]["accepted"]
    shutil.rmtree(paths.expectations_dir)
    accepted = from_dict({**cohort_params().as_dict(), "validate": {"accept_leakage": ["lab_flag"]}})
    summary = validate.run(accepted, paths)
    assert summary["leakage"]["accepted"] == {"lab_flag": {"auc": 1.0, "rule": "single-feature ROC-AUC"}}
    assert summary["leakage_suspects"] == ["lab_flag"]
    md = (tmp_path / "artifacts" / "validate" / "profile" / "profile.md").read_text()
    assert "- lab_flag: AUC 1.000 >= 0.995" in md.split("## Suspected leakage")[1]


def test_association_is_against_the_positive_class():
    y = ["disease", "healthy", "inconclusive", "healthy"] * 10
    df = pd.DataFrame({"f": [float(v == "inconclusive") for v in y], "y": y})
    kinds = {"f": "numeric", "y": "target"}
    against_disease = build_profile(df, kinds, DataParams(target="y", positive_class="disease"), ValidateParams())
    one_vs_rest = build_profile(df, kinds, DataParams(target="y"), ValidateParams())
    assert against_disease["columns"][0]["association"] < 0.8 and not against_disease["leakage_suspects"]
    assert one_vs_rest["leakage_suspects"] == ["f"]


def test_a_row_failing_several_checks_is_quarantined_once_with_every_reason():
    df = pd.DataFrame({"a": ["1", "x", "3"], "_row_id": [0, 1, 2]})
    checks = [
        Check("expect_column_values_to_be_between", "a", "row", False, False, 1, (1,), "[0, 2]", ""),
        Check("expect_column_values_to_be_in_set", "a", "row", False, False, 2, (1, 2), "['1']", ""),
        Check("expect_column_values_to_not_be_null", "a", "batch", False, True, 1, (0,), "", ""),
    ]
    valid, held = quarantine(df, checks)
    assert valid["_row_id"].tolist() == [0]
    assert held["_row_id"].tolist() == [1, 2] and list(held.columns) == ["_row_id", "reason", "a"]
    assert held["reason"].tolist() == [
        "a: expect_column_values_to_be_between [0, 2]; a: expect_column_values_to_be_in_set ['1']",
        "a: expect_column_values_to_be_in_set ['1']",
    ]


def test_univariate_auc():
    y = np.array([False, False, True, True])
    assert univariate_auc(y, np.array([1.0, 2.0, 3.0, 4.0])) == 1.0
    assert univariate_auc(y, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0  # direction does not matter
    assert univariate_auc(y, np.array([1.0, 1.0, 1.0, 1.0])) == 0.5
    assert univariate_auc(np.array([True, True]), np.array([1.0, 2.0])) is None


def test_vectorised_aucs_equal_one_rank_per_column():
    """average_ranks and univariate_aucs (one argsort for every column) equal pandas' rank and univariate_auc
    column by column, with ties, missing values and columns missing a class."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 6, size=(500, 6)).astype(float)  # few values: many ties
    x[:, 1] = rng.normal(size=500)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 2] = np.nan
    x[:250, 3] = np.nan
    labels = pd.Series(rng.choice(["a", "b", "c"], size=500))
    y = (labels == "a").to_numpy()
    x[~y, 4] = np.nan  # only positives have a value
    ours = average_ranks(x)
    assert np.array_equal(np.where(np.isnan(x), np.nan, ours), pd.DataFrame(x).rank().to_numpy(), equal_nan=True)
    got = univariate_aucs(x, y)
    for j in range(x.shape[1]):
        ok = ~np.isnan(x[:, j])
        want = univariate_auc(y[ok], x[ok, j])
        assert np.isnan(got[j]) if want is None else got[j] == pytest.approx(want, abs=1e-12), j
    best = numeric_associations(pd.DataFrame(x, columns=list("uvwxyz")), labels, ["a", "c"])
    for j, col in enumerate("uvwxyz"):
        ok = ~np.isnan(x[:, j])
        per_label = [univariate_auc((labels == p).to_numpy()[ok], x[ok, j]) for p in ("a", "c")]
        want = max((a for a in per_label if a is not None), default=None)
        assert best[col] == (None if want is None else round(want, 4)), col


def _zero_padded_stacked(df):
    """The former one-pass version over the stacked frame: the reference for the column-by-column one."""
    cells = df.stack()
    cells = cells[cells.astype(str).str.startswith("0")]
    padded = cells[cells.astype(str).str.fullmatch(r"0\d{5,}")]
    counts, present = padded.groupby(level=1).agg(["size", "nunique"]), df.notna().sum()
    return {
        col: classify.Suspect(col, "record numbers", int(row["size"]), int(present[col]))
        for col, row in counts.iterrows()
        if row["size"] >= classify.SHARE * present[col] and row["nunique"] >= 10
    }


def test_zero_padded_record_numbers_column_by_column_as_over_the_stacked_frame():
    rng = np.random.default_rng(3)
    n = 400
    mrn = pd.Series([f"{v:07d}" for v in rng.integers(0, 200_000, n)])
    df = pd.DataFrame(
        {
            "mrn": mrn,
            "mrn_sparse": mrn.where(rng.random(n) < 0.4, "12"),  # padded in 40% of rows (>= 30%)
            "mrn_rare": mrn.where(rng.random(n) < 0.2, "12"),  # 20%: below the share
            "few_ids": pd.Series(rng.choice(["0123456", "0234567"], n)),  # padded, too few distinct values
            "short": pd.Series([f"{v:04d}" for v in rng.integers(0, 99, n)]),  # zeros, too few digits
            "decimal": pd.Series([f"{v:.6f}" for v in rng.random(n)]),  # 0.123456: a zero, not padded
            "floats": rng.random(n),
            "ints": rng.integers(0, 10**7, n),
        }
    )
    df = df.mask(rng.random(df.shape) < 0.15)
    got = classify._zero_padded(df)
    assert got == _zero_padded_stacked(df)
    assert set(got) == {"mrn", "mrn_sparse"} and got["mrn"].of == df["mrn"].notna().sum()


def test_inferred_range_is_robust_widened_and_clipped_at_zero():
    df = pd.DataFrame({"x": [str(v) for v in range(1, 201)] + ["5000"], "y": ["a", "b"] * 100 + ["a"]})
    data = from_dict({"data": {"target": "y"}}).data
    suite = infer_suite(df, data, ValidateParams(range_margin=0.5), name="t", source="t.csv")
    (between,) = [e for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_between"]
    lo, hi = pd.Series(range(1, 201)).quantile([0.005, 0.995])  # the lone 5000 moves neither quantile much
    assert between["kwargs"]["min_value"] == 0.0
    assert between["kwargs"]["max_value"] == pytest.approx(hi + 0.5 * (hi - lo), rel=0.02)
    assert between["kwargs"]["max_value"] < 5000


def test_column_kinds_keep_free_text_and_dates_out_of_the_suite():
    n = 40
    df = pd.DataFrame(
        {
            "note": [f"patient reports pain level {i}" for i in range(n)],
            "seen": [f"2024-03-{1 + i % 4:02d}" for i in range(n)],  # few distinct dates: still not a category
            "ward": ["A", "B"] * (n // 2),
            "dose": [str(i) for i in range(n - 2)] + ["n.d.", "high"],
            "y": ["p", "n"] * (n // 2),
        }
    )
    data = from_dict({"data": {"target": "y"}}).data
    suite = infer_suite(df, data, ValidateParams(), name="t", source="t.csv")
    kinds = {c: s["kind"] for c, s in suite["meta"]["medflow"]["columns"].items()}
    assert kinds == {"note": "text", "seen": "text", "ward": "categorical", "dose": "numeric", "y": "target"}
    text = json.dumps(suite)
    assert "pain" not in text and "2024-03" not in text and '["A", "B"]' in text


def test_an_expectation_gx_cannot_evaluate_stops_the_run(first_run, cohort, tmp_path):
    paths = _project(tmp_path, cohort, suite_from=first_run[0])
    suite = json.loads(paths.suite("cohort").read_text())
    between = {"column": "sex", "min_value": 0, "max_value": 1}  # a hand edit that compares text with numbers
    suite["expectations"].append({"type": "expect_column_values_to_be_between", "kwargs": between, "meta": {}})
    paths.suite("cohort").write_text(json.dumps(suite))
    with pytest.raises(ValidationFailed, match="be_between: sex: could not be evaluated"):
        validate.run(cohort_params(), paths)


def test_breast_cancer_demo_validates_with_nothing_quarantined(tmp_path):
    # The demo's heavy-tailed "error" columns reach ~1.7 robust ranges beyond p99.5 (real tumours, not
    # typos): the default range_margin must let them through.
    params = from_dict({"data": {"source": "breast_cancer", "target": "diagnosis", "positive_class": "malignant"}})
    paths = Paths(root=tmp_path)
    summary = validate.run(params, paths)
    assert sources.resolve("breast_cancer", paths) == paths.data_dir / "breast_cancer.csv"
    assert summary["rows_in"] == summary["rows_valid"] == 569
    assert summary["rows_quarantined"] == 0 and summary["leakage_suspects"] == []


def test_max_rows_keeps_the_first_rows_of_a_table(tmp_path):
    params = from_dict({"data": {"source": "breast_cancer", "target": "diagnosis", "max_rows": 100}})
    summary = validate.run(params, Paths(root=tmp_path))
    assert summary["rows_in"] == 100
    assert pd.read_parquet(Paths(root=tmp_path).valid_rows)["_row_id"].max() == 99


def test_an_expectation_type_medflow_does_not_infer_is_evaluated_by_gx(first_run, cohort, tmp_path):
    paths = _project(tmp_path, cohort, suite_from=first_run[0])
    suite = json.loads(paths.suite("cohort").read_text())
    lengths = {"column": "sex", "min_value": 1, "max_value": 1}
    suite["expectations"].append(
        {"type": "expect_column_value_lengths_to_be_between", "kwargs": lengths, "meta": {"level": "row"}}
    )
    paths.suite("cohort").write_text(json.dumps(suite))
    summary = validate.run(cohort_params(), paths)
    odd = int((cohort["sex"].str.len() > 1).sum())
    assert odd and summary["quarantine_reasons"]["sex: expect_column_value_lengths_to_be_between"] == odd
    _, held = _outputs(paths)
    assert held["reason"].str.contains("sex: expect_column_value_lengths_to_be_between").sum() == odd


BENCH_WIDE = ".venv/bin/python bench/validate_wide.py"


@pytest.mark.e2e
def test_wide_table_benchmark_runs_small(tmp_path):
    from usercmd import scratch_clone, sh

    clone = scratch_clone(tmp_path / "medflow")
    out = sh(f"{BENCH_WIDE} --cols 60 --rows 80 --repeats 1", clone, timeout=300).stdout
    assert "validate on 60 columns x 80 rows" in out and "ratios" in out
    result = json.loads((clone / "bench/results/validate_wide.json").read_text())
    assert result["cols"] == 60 and result["first_run_s"] > 0 and result["baseline_s"] > 0
