"""A hospital's own table through the real executable: labs written for people ("1,262", "n/a") are read the one way
validate decided for each column, in training and in every scoring path (predict, the pyfunc as `mlflow models
serve` feeds it, monitor), and a quarantine that would take the sickest patients stops the run instead of training
on what is left."""

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from owntable import visits
from usercmd import scratch_clone, sh

from medflow.data.features import coerce_features
from medflow.models.bundle import Predictor

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

SALT = {"MEDFLOW_SALT": "own-table-salt"}
OWN = (
    "-P data.source=data/visits.csv -P data.target=outcome -P data.patient_id=mrn -P 'data.identifiers=[name]' "
    "-P data.positive_class=icu -P register.model_name=own -P register.min_primary=0.5 -P train.max_epochs=15 "
    "-P validate.data_docs=false"
)


def trained(root, prefect_server: str) -> None:
    # The session's Prefect server rather than a temporary one started per command (~10 CPU-s each on a busy box):
    # this module is about the table's formats.
    done = sh(f".venv/bin/medflow run {OWN}", root, timeout=600, **SALT, PREFECT_API_URL=prefect_server)
    assert "registered own v1 (champion" in done.stdout, done.stdout[-2000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory, migrated_mlflow_db, prefect_server):
    root = scratch_clone(tmp_path_factory.mktemp("own") / "medflow", migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    visits().to_csv(root / "data" / "visits.csv", index=False)
    trained(root, prefect_server)
    return root


def test_training_file_scores_through_predict_with_no_row_refused(project):
    root = project
    assert json.loads((root / "artifacts/validate/formats.json").read_text()) == {
        "ldh": {"reading": "thousands", "unit": None}
    }
    done = sh(".venv/bin/medflow predict --model models:/own@champion --input data/visits.csv --output p.csv", root)
    rows = len(pd.read_csv(root / "data/visits.csv"))
    assert done.stdout.strip().splitlines()[-1].startswith(f"p.csv: {rows} rows scored by own v1, {rows} ok, 0 refused")


def test_scoring_paths_build_the_feature_matrix_training_built_row_for_row(project):
    root = project
    raw = pd.read_csv(root / "data/visits.csv", dtype=str, keep_default_na=False)
    cleaned = pd.read_parquet(root / "artifacts/clean/cleaned.parquet")
    bundle = Predictor(root / "artifacts/train/model")
    features = bundle.preprocessor.transform
    training = features(cleaned)
    scored = features(coerce_features(raw.iloc[cleaned["_row_id"].to_numpy()], bundle.schema))
    np.testing.assert_array_equal(scored, training)
    # The registered pyfunc, given the rows as `mlflow models serve` decodes a JSON request (all text).
    store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)  # the conftest fixture unsets both after the test
    mlflow.set_registry_uri(store)
    model = mlflow.pyfunc.load_model("models:/own@champion")
    request = pd.read_json(io.StringIO(raw.to_json(orient="split")), orient="split", dtype=False)
    out = model.predict(request)
    assert out["status"].eq("ok").all(), out["reason"].value_counts().to_dict()


def test_monitor_reads_a_batch_in_the_training_formats_without_refusal_or_drift(project):
    root = project
    (root / "incoming").mkdir(exist_ok=True)
    visits(120, seed=7, first_mrn=900000).to_csv(root / "incoming" / "next.csv", index=False)
    # On Prefect's temporary server, as a user's monitor runs by default (test_monitor's go to the session's).
    done = sh(".venv/bin/medflow monitor --batch incoming/next.csv", root, timeout=600, **SALT)
    report = json.loads(next((root / "artifacts" / "monitor").glob("*/report.json")).read_text())
    assert report["refused_rows"] == 0, done.stdout[-2000:]
    assert "ldh" not in report["drifted_features"], report["features"]["ldh"]


def test_a_rerun_after_plain_numbers_arrive_keeps_every_high_value(tmp_path, migrated_mlflow_db):
    """The issue's path: a first run reads "1,262" as a number; rows written with plain numbers are added; the
    rerun must read the column both ways, not quarantine every LDH of 1,000 and above. Both are validate's readings
    (its suite and formats): the first run is validate's step, as `dvc repro` runs it."""
    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    first = visits()
    first.to_csv(root / "data" / "visits.csv", index=False)
    sh(f".venv/bin/medflow step validate {OWN}", root, **SALT)
    assert json.loads((root / "artifacts/validate/formats.json").read_text())["ldh"]["reading"] == "thousands"
    later = visits(600, seed=9, first_mrn=800000, grouped=False)
    pd.concat([first, later]).to_csv(root / "data" / "visits.csv", index=False)
    sh(f".venv/bin/medflow step validate {OWN}", root, **SALT)
    summary = json.loads((root / "artifacts/validate/summary.json").read_text())
    assert summary["rows_in"] == len(first) + len(later) and summary["rows_quarantined"] == 0
    assert summary["columns"]["converted"]["ldh"].startswith("thousands separators removed from")


def test_a_quarantine_of_the_sickest_patients_stops_with_one_line(tmp_path, migrated_mlflow_db):
    """A suite inferred from plain numbers; then an export writes LDH of 1,000 and above with a space as thousands
    separator ("1 262", as French exports do): no reading fits, so each such row would be quarantined, every one a
    sick patient. Above a tenth of the rows the column's own type check stops the run; below it, their
    concentration among the ICU patients stops it all the same."""
    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    df = visits(grouped=False)
    df.to_csv(root / "data" / "visits.csv", index=False)
    sh(f".venv/bin/medflow step validate {OWN}", root, **SALT)
    for above in (1000, 1400):
        spaced = df.assign(ldh=[f"{int(v):,}".replace(",", " ") if int(v) >= above else v for v in df["ldh"]])
        spaced.to_csv(root / "data" / "visits.csv", index=False)
        done = sh(f".venv/bin/medflow step validate {OWN}", root, check=False, **SALT)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stdout[-2000:] + done.stderr
        assert done.stderr.startswith("medflow step: error: validate: data/visits.csv: ")  # the step, not "setup"
        held = int(spaced["ldh"].str.contains(" ").sum())
        if above == 1000:
            assert f"ldh: {held} of {len(df)} non-null values do not parse as numbers" in done.stderr, done.stderr
        else:  # fewer than a tenth of the rows, nearly all of them ICU patients
            assert held < 0.1 * len(df) and f"quarantine takes {held} of {len(df)} rows" in done.stderr
            # The sickest patients: the highest CRP values, as the highest LDH are.
            assert "concentrated where 'crp' highest tenth" in done.stderr, done.stderr
            assert "most for ldh: " in done.stderr
        assert not (root / "artifacts/validate/valid.parquet").exists()
        assert all(v not in done.stderr for v in spaced["ldh"] if " " in v)  # counts, never a value


def test_infinities_are_quarantined_per_row_and_a_text_column_is_named(tmp_path, migrated_mlflow_db, prefect_server):
    """crp exported with inf/-inf stays a numeric column whose such rows are quarantined, each with its reason, and
    a fifth of them stops the run naming the column (it was typed as text and dropped without a word); a column of
    mostly numbers read as text is said to be no feature, with why."""
    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    for every, stops in ((25, False), (5, True)):
        df = visits()
        df.loc[df.index % every == 0, "crp"] = np.where(df.index[df.index % every == 0] % 2 == 0, "inf", "-Infinity")
        df.to_csv(root / "data" / "visits.csv", index=False)
        done = sh(f".venv/bin/medflow step validate {OWN}", root, check=False, **SALT)
        if stops:
            assert done.returncode == 2 and "crp: 153 of 731 non-null values do not parse" in done.stderr, done.stderr
            continue
        assert done.returncode == 0, done.stderr
        summary = json.loads((root / "artifacts/validate/summary.json").read_text())
        assert summary["quarantine_reasons"]["crp: magnitude_below_max_abs"] == (len(df) + every - 1) // every
        assert json.loads((root / "artifacts/validate/columns.json").read_text())["crp"] == "numeric"
        (root / "expectations" / "visits.json").unlink()
    df = visits()
    albumin = np.random.default_rng(0).normal(3.9, 0.4, len(df)).round(3).astype(str)
    df["albumin"] = np.where(df.index % 4 == 0, "see note", albumin)  # a quarter not numbers
    df.to_csv(root / "data" / "visits.csv", index=False)
    done = sh(
        f".venv/bin/medflow run {OWN} -P train.max_epochs=3", root, timeout=600, **SALT, PREFECT_API_URL=prefect_server
    )
    n = len(df)
    assert (
        f"not a feature: 'albumin' ({(n + 3) // 4} of {n} values are not numbers (validate.type_mostly=0.9): read "
        "as text" in done.stdout
    ), done.stdout[-2000:]


def test_a_new_users_path_ends_with_a_card_that_matches_the_aliases(project, prefect_server):
    """Issue 28's path in one test: own table -> first champion (the fixture) -> predict on the training file ->
    monitor a batch -> a second version -> promote -> card. No row training accepted is refused, no file under data/
    changes (no --update), and each card names the alias its version carries."""
    from mlflow import MlflowClient

    root = project
    data = {p: p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()}
    done = sh(".venv/bin/medflow predict --model models:/own@champion --input data/visits.csv --output p.csv", root)
    assert done.stdout.strip().splitlines()[-1].endswith(" 0 refused (reason in the row's `reason` column)")
    (root / "incoming").mkdir(exist_ok=True)
    visits(90, seed=11, first_mrn=950000).to_csv(root / "incoming" / "path.csv", index=False)
    env = SALT | {"PREFECT_API_URL": prefect_server}
    sh(".venv/bin/medflow monitor --batch incoming/path.csv", root, timeout=600, **env)
    assert {p: p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()} == data
    done = sh(f".venv/bin/medflow run {OWN} -P train.max_epochs=4 -P register.promote=never", root, timeout=600, **env)
    assert "registered own v2 (not promoted: " in done.stdout, done.stdout[-2000:]
    sh(".venv/bin/medflow promote own 2 --reason 'reviewed with the ward team'", root)
    store = f"sqlite:///{root / 'mlruns/mlflow.db'}"
    registry = MlflowClient(store, registry_uri=store)
    assert str(registry.get_model_version_by_alias("own", "champion").version) == "2"
    assert "Current alias: `champion`." in registry.get_model_version("own", "2").description
    assert "Current alias: none." in registry.get_model_version("own", "1").description


# As docs/evidence.md prints them; params.yaml keeps the own table's settings from the fixture's `-P`.
BY_TIME = ".venv/bin/medflow run -P split.by=time -P split.time_column=admitted"
BY_SITE = ".venv/bin/medflow run -P split.by=site -P split.site_column=hospital -P 'split.test_sites=[north]'"
RECALIBRATED = ".venv/bin/medflow run -P train.recalibrate=logistic"


def test_the_evidence_pages_runs_split_by_time_and_site_then_recalibrate(project, prefect_server):
    """Last in the module: it adds an admission date and a hospital to the table the other tests read."""
    root = project
    table = pd.read_csv(root / "data/visits.csv", dtype=str, keep_default_na=False)
    table["admitted"] = table["visit_date"]
    table["hospital"] = np.array(["north", "south", "east"])[table["mrn"].astype(int) % 3]
    table.to_csv(root / "data/visits.csv", index=False)
    # As own-table.md asks: the reviewed suite learns of the two new columns, in its column set and with a kind.
    suite = json.loads((root / "expectations/visits.json").read_text())
    (columns,) = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
    columns["kwargs"]["column_set"] += ["admitted", "hospital"]
    kinds = suite["meta"]["medflow"]["columns"]
    kinds |= {"admitted": {"kind": "text", "null_rate": 0.0}, "hospital": {"kind": "categorical", "null_rate": 0.0}}
    (root / "expectations/visits.json").write_text(json.dumps(suite, indent=2))
    env = SALT | {"PREFECT_API_URL": prefect_server}

    def where(column: str) -> tuple[pd.Series, pd.Series]:
        manifest = pd.read_csv(root / "artifacts/split/manifest.csv").set_index("row_id")["split"]
        return manifest, table.loc[manifest.index, column]

    sh(BY_TIME, root, timeout=600, **env)
    split, mrn = where("mrn")
    first = mrn.map(table.groupby("mrn")["admitted"].min())  # a patient's split follows their earliest admission
    assert first[split == "train"].max() <= first[split == "val"].min()
    assert first[split == "val"].max() <= first[split == "test"].min()
    schema = json.loads((root / "artifacts/clean/schema.json").read_text())
    assert "admitted" not in schema["numeric"] + schema["categorical"]

    sh(BY_SITE, root, timeout=600, **env)
    split, hospital = where("hospital")
    assert ((split == "test") == (hospital == "north")).all()

    sh(RECALIBRATED, root, timeout=600, **env)
    assert json.loads((root / "artifacts/train/model/model.json").read_text())["recalibration"]["method"] == "logistic"
