"""The bad-input corpus: each broken input ends in one exact outcome, a clear error naming file, column, rule and
count (and quoting no input value), or quarantined rows with rows_in = rows_valid + rows_quarantined."""

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cohort import cohort_params
from PIL import Image
from usercmd import scratch_clone, sh

from medflow.data.synthetic import synthetic_cohort
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.pipeline import run_step
from medflow.privacy.keys import SaltMissing

CSV = "data/cohort.csv"
# Values seeded into broken files: none may appear in an error message.
SEEDED = ["Ada Lovelace", "ada@example.org", "+1-555-867-5309", "MRN0099123", "1901-02-03", "265,000", "Zürich"]


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return synthetic_cohort(n_patients=40, seed=5, bad_rows=False, extra_label=False)


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "corpus-salt")


def _values(df: pd.DataFrame) -> set[str]:
    cols = [c for c in ("mrn", "name", "dob", "phone") if c in df]
    return {v for c in cols for v in df[c].dropna().astype(str) if len(v) >= 4} | set(SEEDED)


def _write(paths: Paths, df: pd.DataFrame, **kw) -> None:
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(paths.data_dir / "cohort.csv", **{"index": False, **kw})


def _params(**data):
    return from_dict({**cohort_params().as_dict(), "data": {**cohort_params().data.model_dump(), **data}})


# Each case: (write the input under paths and return params, expected error fragments or None for success).
def _empty(p, df):
    p.data_dir.mkdir(parents=True)
    (p.data_dir / "cohort.csv").write_bytes(b"")
    return _params()


def _header_only(p, df):
    _write(p, df.head(0))
    return _params()


def _wrong_delimiter(p, df):
    _write(p, df)
    return _params(delimiter=";")


def _semicolons(p, df):
    _write(p, df, sep=";")
    return _params()


def _utf16(p, df):
    _write(p, df.assign(site=df["site"].replace("north", "Zürich")), encoding="utf-16")
    return _params()


def _utf16_without_bom(p, df):
    p.data_dir.mkdir(parents=True)
    (p.data_dir / "cohort.csv").write_bytes(df.to_csv(index=False).encode("utf-16-le"))
    return _params()


def _latin1(p, df):
    _write(p, df.assign(site=df["site"].replace("north", "Zürich")), encoding="latin-1")
    return _params()


def _latin1_declared(p, df):
    _write(p, df.assign(site=df["site"].replace("north", "Zürich")), encoding="latin-1")
    return _params(encoding="latin-1")


def _bom(p, df):
    _write(p, df, encoding="utf-8-sig")
    return _params()


def _missing_target(p, df):
    _write(p, df.drop(columns="outcome"))
    return _params()


def _single_class(p, df):
    _write(p, df.assign(outcome="disease"))
    return _params()


def _null_target(p, df):
    _write(p, df.assign(outcome=None))
    return _params()


def _all_null_column(p, df):
    _write(p, df.assign(spare=None))
    return _params()


def _one_row(p, df):
    _write(p, df.head(1))
    return _params()


def _missing_ids(p, df):
    _write(p, df.assign(mrn=df["mrn"].where(df.index % 20 > 0)))
    return _params()


def _unknown_identifier(p, df):
    _write(p, df)
    return _params(identifiers=["name", "dob", "phone", "ssn_number"])


def _missing_source(p, df):
    return _params(source="data/nope.csv")


def _directory_source(p, df):
    (p.data_dir / "cohort.csv").mkdir(parents=True)
    return _params()


def _xlsx_source(p, df):
    p.data_dir.mkdir(parents=True)
    (p.data_dir / "cohort.xlsx").write_bytes(b"PK\x03\x04")
    return _params(source="data/cohort.xlsx")


def _symlink_out(p, df):
    outside = p.root / "elsewhere.csv"
    df.to_csv(outside, index=False)
    p.data_dir.mkdir(parents=True)
    (p.data_dir / "cohort.csv").symlink_to(outside)
    return _params()


def _absolute_out(p, df):
    df.to_csv(p.root / "elsewhere.csv", index=False)
    return _params(source=str(p.root / "elsewhere.csv"))


def _dotdot_out(p, df):
    _write(p, df)
    df.to_csv(p.root / "elsewhere.csv", index=False)
    return _params(source="data/../elsewhere.csv")


def _newlines(p, df):
    notes = [f"seen on visit {i}\nfollow-up in {i % 7} weeks" for i in range(len(df))]
    _write(p, df.assign(notes=notes))
    return _params()


def _nested_parquet(p, df):
    p.data_dir.mkdir(parents=True)
    df.assign(codes=[[1, 2]] * len(df)).to_parquet(p.data_dir / "cohort.parquet")
    return _params(source="data/cohort.parquet")


def _duplicated_header(p, df):
    p.data_dir.mkdir(parents=True)
    text = df.to_csv(index=False).replace("systolic_bp", "age", 1)
    (p.data_dir / "cohort.csv").write_text(text)
    return _params()


def _thousands(p, df):
    charge = [f"{265 + i % 50},{i % 10}00" for i in range(len(df))]
    _write(p, df.assign(charge=charge))
    return _params()


def _percent(p, df):
    _write(p, df.assign(spo2=[f"{90 + i % 10}%" for i in range(len(df))]))
    return _params()


def _units(p, df):
    _write(p, df.assign(dose=[f"{5 + i % 20} mg" for i in range(len(df))]))
    return _params()


def _mixed_units(p, df):
    _write(p, df.assign(dose=[f"{5 + i % 20} {'mg' if i % 2 else 'g'}" for i in range(len(df))]))
    return _params()


def _decimal_comma(p, df):
    _write(p, df.assign(crp=[f"{i % 30},{i % 9}" for i in range(len(df))]))
    return _params()


def _ambiguous_comma(p, df):
    values = [f"{1 + i % 9},{i % 7}" if i % 2 else f"{1 + i % 9},{i % 10}00,000" for i in range(len(df))]
    _write(p, df.assign(crp=values))
    return _params()


def _inf_and_huge(p, df):
    glucose = df["glucose"].astype(object).copy()
    glucose.iloc[[1, 2]] = ["inf", "-inf"]
    glucose.iloc[[3, 4, 5]] = ["1e308", "-1e308", "1e300"]
    _write(p, df.assign(glucose=glucose))
    return _params()


def _undeclared_names(p, df):
    _write(p, df.assign(contact=df["name"]))
    return _params()


def _undeclared_mrn_email_dob(p, df):
    n = len(df)
    extra = {
        "ref": [f"MRN{9900000 + i}" for i in range(n)],
        "mail": [f"user{i}@example.org" for i in range(n)],
        "born": [f"{1930 + i % 60}-0{1 + i % 9}-1{i % 9}" for i in range(n)],
    }
    _write(p, df.assign(**extra))
    return _params()


def _email_in_free_text(p, df):
    notes = [f"follow-up note {i}" if i % 9 else f"pt asked to mail ada{i}@example.org" for i in range(len(df))]
    _write(p, df.assign(remarks=notes))
    return _params()


def _leaky(p, df):
    _write(p, df.assign(ct_result=np.where(df["outcome"] == "disease", "22", "45")))
    return _params()


def _leaky_excluded(p, df):
    _write(p, df.assign(ct_result=np.where(df["outcome"] == "disease", "22", "45")))
    return _params(exclude=["ct_result"])


def _positive_misspelt(p, df):
    _write(p, df)
    return _params(positive_class="sick")


def _row_index(p, df):
    _write(p, df.drop(columns="mrn"), index=True)  # pandas' index: a column with no name, 0..n-1
    return _params(patient_id=None)


def _row_numbers(p, df):
    _write(p, df.assign(rownum=np.arange(1, len(df) + 1)))
    return _params()


def _gzip_cut_short(p, df):
    p.data_dir.mkdir(parents=True)
    whole = gzip.compress(df.to_csv(index=False).encode())
    (p.data_dir / "cohort.csv.gz").write_bytes(whole[: len(whole) // 2])
    return _params(source="data/cohort.csv.gz")


def _not_gzipped(p, df):
    p.data_dir.mkdir(parents=True)
    (p.data_dir / "cohort.csv.gz").write_text(df.to_csv(index=False))
    return _params(source="data/cohort.csv.gz")


def _exclude_misspelt(p, df):
    _write(p, df)
    return _params(exclude=["nmae"])


def _exclude_and_identifier(p, df):
    _write(p, df)
    return _params(exclude=["name"])


ERRORS = {
    "empty-file": (_empty, ["data/cohort.csv: empty file"]),
    "header-only": (_header_only, ["data/cohort.csv: no data rows", "13 columns"]),
    "wrong-delimiter": (
        _wrong_delimiter,
        ["data.delimiter semicolon splits the header into 1", "comma into 13"],
    ),
    "latin-1-as-utf-8": (_latin1, ["not readable as utf-8 (sniffed)", "set data.encoding"]),
    "missing-target": (_missing_target, ["data.target names column(s) ['outcome'] that are not in the table"]),
    "single-class-target": (_single_class, ["target column 'outcome' has 1 distinct", "needs 2 or more classes"]),
    "all-null-target": (_null_target, ["target column 'outcome' has 0 distinct"]),
    "one-row": (_one_row, ["1 row(s); a suite is inferred only from at least validate.min_rows=30"]),
    "unknown-identifier": (_unknown_identifier, ["data.identifiers names column(s) ['ssn_number']"]),
    "missing-source": (_missing_source, ["data source not found (data.source='data/nope.csv')"]),
    "directory-source": (_directory_source, ["data.source is a folder"]),
    "xlsx-source": (_xlsx_source, ["unsupported file type .xlsx"]),
    "symlink-escapes": (_symlink_out, ["data.source is a link that leads outside the project's data folder"]),
    "absolute-path": (_absolute_out, ["lies outside the project's data folder", "data.allowed_roots"]),
    "dotdot-path": (_dotdot_out, ["data/../elsewhere.csv: data.source is a link that leads outside"]),
    "nested-parquet": (_nested_parquet, ["column(s) ['codes'] hold nested values", "data.exclude"]),
    "duplicated-header": (_duplicated_header, ["duplicated column name(s) ['age']", "1 repeat(s)"]),
    "mixed-units": (_mixed_units, ["column 'dose' has 2 different units (rule: one unit per column): 95 of 95 values"]),
    "ambiguous-comma": (_ambiguous_comma, ["column 'crp' uses a comma as thousands separator in", "decimal comma"]),
    "undeclared-names": (_undeclared_names, ["column 'contact':", "look like person names", "data.exclude=[contact]"]),
    "undeclared-ids": (
        _undeclared_mrn_email_dob,
        ["3 undeclared column(s)", "'ref'", "record numbers", "'mail'", "e-mail addresses", "'born'", "dates of birth"],
    ),
    "identifier-in-free-text": (_email_in_free_text, ["column 'remarks':", "look like e-mail addresses"]),
    "leaky-column": (
        _leaky,
        ["'ct_result' alone predicts 'outcome' with ROC-AUC 1.000 (a 1:1 recoding"],
    ),
    "misspelt-positive-class": (
        _positive_misspelt,
        ["data.positive_class='sick' never occurs in target column 'outcome' (values: [", "set it to one of them"],
    ),
    "row-index-without-a-name": (
        _row_index,
        [
            "column 'Unnamed: 0' (no name in the header): its",
            "values are the rows' numbers in the file",
            """-P 'data.exclude=["Unnamed: 0"]'""",
        ],
    ),
    "row-numbers": (_row_numbers, ["column 'rownum': its", "rows' numbers", "-P 'data.exclude=[rownum]'"]),
    "gzip-cut-short": (_gzip_cut_short, ["cohort.csv.gz: not a readable gzip file (EOFError); compress it again"]),
    "not-gzipped": (_not_gzipped, ["cohort.csv.gz: not a readable gzip file (BadGzipFile); compress it again"]),
    "misspelt-exclusion": (_exclude_misspelt, ["data.exclude names column(s) ['nmae'] that are not in the file"]),
    "excluded-identifier": (_exclude_and_identifier, ["column(s) ['name'] are in data.exclude and also named"]),
}

# Inputs medflow reads successfully: (writer, {quarantine rule: rows}, extra check on summary and outputs).
PASSES = {
    "sniffed-semicolons": (_semicolons, {}),
    "utf-16": (_utf16, {}),
    "utf-16-without-bom": (_utf16_without_bom, {}),
    "latin-1-declared": (_latin1_declared, {}),
    "utf-8-bom": (_bom, {}),
    "all-null-column": (_all_null_column, {}),
    "missing-patient-ids": (_missing_ids, lambda df: {"mrn: expect_column_values_to_not_be_null": len(df[::20])}),
    "embedded-newlines": (_newlines, {}),
    "thousands-separators": (_thousands, {}),
    "percent-signs": (_percent, {}),
    "units": (_units, {}),
    "decimal-comma": (_decimal_comma, {}),
    "inf-and-absurd-magnitudes": (
        _inf_and_huge,
        {
            "glucose: expect_column_values_to_match_regex": 2,
            "glucose: magnitude_below_max_abs": 5,  # inf and -inf are numbers no measurement reaches, as 1e308 is
            "glucose: expect_column_values_to_be_between": 5,
        },
    ),
    "leaky-column-excluded": (_leaky_excluded, {}),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_broken_input_stops_with_a_clear_error_quoting_no_value(case, base, tmp_path):
    write, fragments = ERRORS[case]
    paths = Paths(root=tmp_path)
    params = write(paths, base)
    with pytest.raises(ValueError) as err:
        run_step("validate", params, paths)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not [v for v in _values(base) if v in message]
    # Nothing the run could have learnt from the data was written.
    assert not paths.expectations_dir.exists()
    assert not paths.valid_rows.exists()


@pytest.mark.parametrize("case", list(PASSES))
def test_odd_but_readable_input_is_read_or_quarantined(case, base, tmp_path):
    write, rules = PASSES[case]
    paths = Paths(root=tmp_path)
    summary = run_step("validate", write(paths, base), paths)
    n = len(base)
    assert summary["rows_in"] == n == summary["rows_valid"] + summary["rows_quarantined"]
    assert summary["quarantine_reasons"] == (rules(base) if callable(rules) else rules)
    valid = pd.read_parquet(paths.valid_rows)
    kinds = json.loads((paths.step_dir("validate") / "columns.json").read_text())
    assert list(kinds)[0] == "mrn"  # a byte-order mark never sticks to the first column name
    if case == "missing-patient-ids":
        # No patient id, no patient key: the row could not be kept out of the other splits of its patient.
        assert valid["_patient_key"].notna().all() and summary["rows_quarantined"] == len(base[::20])
    if case in ("thousands-separators", "percent-signs", "units", "decimal-comma"):
        ((col, how),) = summary["columns"]["converted"].items()
        assert kinds[col] == "numeric" and "values" in how
        assert pd.to_numeric(valid[col]).notna().all()
    if case == "embedded-newlines":
        assert kinds["notes"] == "text" and "notes" not in valid
    if case == "all-null-column":
        assert kinds["spare"] == "text" and list(summary["columns"]["not_features"]) == ["visit_date", "spare"]
    if case == "utf-16":
        assert "Zürich" in set(valid["site"])
    held = pd.read_csv(paths.step_dir("validate") / "quarantine.csv", dtype=str)
    assert not {"name", "dob", "phone", "mrn", "visit_date"} & set(held.columns)


def test_unset_salt_stops_validate_before_anything_is_written(base, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFLOW_SALT")
    paths = Paths(root=tmp_path)
    _write(paths, base)
    with pytest.raises(SaltMissing, match="MEDFLOW_SALT is not set"):
        run_step("validate", _params(), paths)
    assert not paths.expectations_dir.exists()


def test_unseen_label_against_the_suite_stops_the_run(base, tmp_path):
    paths = Paths(root=tmp_path)
    _write(paths, base)
    run_step("validate", _params(), paths)
    _write(paths, base.assign(outcome=base["outcome"].where(base.index % 10 > 0, "relapse")))
    with pytest.raises(ValueError) as err:
        run_step("validate", _params(), paths)
    unseen = int((base.index % 10 == 0).sum())
    assert f"expect_column_values_to_be_in_set: outcome: {unseen} of {len(base)} non-null values outside" in str(
        err.value
    )


def test_only_duplicate_rows_are_quarantined_by_clean(base, tmp_path):
    paths = Paths(root=tmp_path)
    twice = pd.concat([base.head(40), base.head(40)], ignore_index=True)
    _write(paths, twice)
    run_step("validate", _params(), paths)
    summary = run_step("clean", _params(), paths)
    assert summary["rows_in"] == 80 and summary["rows_quarantined"] == 40 and summary["rows_out"] == 40


def _manifest(paths: Paths, outside: str) -> None:
    folder = paths.data_dir / "scans"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"i{i}.png")
        rows.append((f"i{i}.png", "a" if i % 2 else "b"))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.png").write_bytes(b"")
    (folder / "link.png").symlink_to(outside)
    rows += [("corrupt.png", "a"), ("empty.png", "b"), ("gone.png", "a"), ("../../secret.png", "b"),
             (outside, "a"), ("link.png", "b")]  # fmt: skip
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(folder / "manifest.csv", index=False)


def test_image_manifest_quarantines_broken_files_and_paths_leaving_the_data_folder(tmp_path):
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    paths = Paths(root=tmp_path / "proj")
    _manifest(paths, str(outside))
    params = from_dict({"data": {"kind": "image", "source": "data/scans/manifest.csv", "target": "label"}})
    summary = run_step("validate", params, paths)
    assert summary["rows_in"] == 36 == summary["rows_valid"] + summary["rows_quarantined"]
    assert summary["quarantine_reasons"] == {
        "path: decode_failed": 2,
        "path: file_missing": 1,
        "path: path_outside_data": 3,
    }
    held = pd.read_csv(paths.step_dir("validate") / "quarantine.csv")
    reasons = dict(zip(held["_row_id"], held["reason"], strict=True))
    assert reasons[33] == "path: path_outside_data ('..' leads out of the data folder)"
    assert reasons[34] == "path: path_outside_data (absolute path)"
    assert reasons[35] == "path: path_outside_data (a link out of the data folder)"


@pytest.fixture(scope="module")
def clone(tmp_path_factory, base):
    return scratch_clone(tmp_path_factory.mktemp("corpus-clone"))


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("case", "args", "fragments"),
    [
        ("duplicated-header", "", ["medflow step: error", "duplicated column name(s) ['age']"]),
        ("undeclared-names", "", ["medflow step: error", "column 'contact':", "look like person names"]),
        ("bad-params", "-P data.sourcee=x", ["data.sourcee", "Extra inputs are not permitted"]),
    ],
)
def test_the_medflow_executable_prints_one_line_naming_the_cause(clone, base, case, args, fragments):
    data = clone / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(clone / "expectations", ignore_errors=True)
    paths = Paths(root=clone)
    if case == "undeclared-names":
        _undeclared_names(paths, base)
    else:
        _duplicated_header(paths, base)
    overrides = " ".join(
        f"-P '{k}'"
        for k in ("data.source=data/cohort.csv", "data.target=outcome", "data.patient_id=mrn",
                  "data.identifiers=[name, dob, phone]", "data.positive_class=disease")
    )  # fmt: skip
    done = sh(f".venv/bin/medflow step validate {overrides} {args}", clone, check=False, MEDFLOW_SALT="s")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert any(all(f in line for f in fragments) for line in lines), done.stderr
    assert not [v for v in _values(base) if v in done.stdout + done.stderr]


def diabetes_export() -> pd.DataFrame:
    """scikit-learn's diabetes table (442 patients) as a hospital would export it: repeated visits, identifiers,
    numbers written for people, and a post-outcome column that encodes the label."""
    from sklearn.datasets import load_diabetes

    ds = load_diabetes(scaled=False, as_frame=True)
    df = ds.frame.rename(columns={"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glu"})
    df["progressed"] = np.where(df.pop("target") > 140, "yes", "no")
    rng = np.random.default_rng(0)
    who = rng.choice(len(df), 600)  # some patients twice, their rows exported twice
    df = df.loc[who].reset_index(drop=True)
    df.insert(0, "patient_no", [f"H{100000 + i:06d}" for i in who])
    df.insert(1, "patient", [f"{FIRSTS[i % 8]} {LASTS[i // 8 % 8]}" for i in who])
    df["sex"] = df["sex"].map({1.0: "F", 2.0: "M"})
    df["tc"] = [f"{v:,.0f}" if v >= 100 else f"{v:.0f}" for v in df["tc"] * 10]  # "1,234": thousands separators
    df["bmi"] = [f"{v:.1f} kg/m2" for v in df["bmi"]]
    df["followup_status"] = np.where(df["progressed"] == "yes", "progressed at 1y", "stable at 1y")
    return df


FIRSTS = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Niklaus"]
LASTS = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Wirth"]


def test_a_public_like_table_with_its_own_quirks(tmp_path):
    paths = Paths(root=tmp_path)
    paths.data_dir.mkdir(parents=True)
    df = diabetes_export()
    df.to_csv(paths.data_dir / "diabetes.csv", index=False)
    data = {"source": "data/diabetes.csv", "target": "progressed", "positive_class": "yes"}
    steps = [  # what a user meets, one fix at a time
        ({}, "'patient_no': 600 of 600 sampled values look like record numbers"),
        ({"patient_id": "patient_no"}, "'patient': 600 of 600 sampled values look like person names"),
        ({"patient_id": "patient_no", "identifiers": ["patient"]}, "'followup_status' alone predicts 'progressed'"),
    ]
    for extra, stop in steps:
        with pytest.raises(ValueError) as err:
            run_step("validate", from_dict({"data": {**data, **extra}}), paths)
        assert stop in str(err.value)
        assert not [v for v in df["patient"].tolist() + df["patient_no"].tolist() if v in str(err.value)]
    params = from_dict({"data": {**data, "patient_id": "patient_no", "identifiers": ["patient"],
                                 "exclude": ["followup_status"]}})  # fmt: skip
    summary = run_step("validate", params, paths)
    assert summary["rows_in"] == 600 == summary["rows_valid"] + summary["rows_quarantined"]
    assert set(summary["columns"]["converted"]) == {"tc", "bmi"}
    kinds = json.loads((paths.step_dir("validate") / "columns.json").read_text())
    assert kinds["tc"] == kinds["bmi"] == "numeric" and kinds["patient"] == "identifier"
    cleaned = run_step("clean", params, paths)
    assert cleaned["numeric_features"] == 9 and cleaned["categorical_features"] == 1
    assert cleaned["rows_quarantined"] == 600 - len(set(df["patient_no"]))  # exact repeats of a patient's row
    print(f"\ndiabetes export: {summary['columns']} -> {summary['rows_valid']} valid rows, clean {cleaned}")
