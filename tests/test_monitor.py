"""Monitoring and updates: drift statistics from stored aggregates, and the whole loop on the synthetic cohort as a
user runs it (`medflow monitor`): an unshifted batch -> no retraining; a shifted batch -> drift report -> retrain ->
the candidate gated -> the decision recorded on the registry, in the report and in MLflow."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from usercmd import VENV_BIN, free_port, scratch_clone, sh, user_env

from medflow.data.synthetic import synthetic_cohort
from medflow.monitoring import drift, reference
from medflow.params import MonitorParams

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

# docs/monitoring.md, as printed.
MONITOR = ".venv/bin/medflow monitor --batch incoming/2026-12.csv"
COHORT = (
    "-P data.source=data/visits.csv -P data.target=outcome -P data.patient_id=mrn -P data.positive_class=disease "
    "-P 'data.identifiers=[name, dob, phone]' -P register.model_name=monitored"
)
# A small net, few epochs; the first champion's floors are opened (this is about the loop, not the model).
TINY = "-P train.max_epochs=4 -P train.patience=2 -P 'train.hidden=[8]' -P evaluate.n_boot=200"
TINY += " -P register.gate.n_boot=200 -P register.min_primary=0.0 -P register.gate.baseline_margin=1"
TINY += " -P validate.data_docs=false"
# No training deployment on the session's Prefect server: the monitor trains in its own process, as it says.
NOT_DEPLOYED = "-P monitor.deployment=medflow-pipeline/not-deployed"
SALT = {"MEDFLOW_SALT": "monitor-test-salt"}


def visits(n_patients: int, seed: int, first_id: int) -> pd.DataFrame:
    df = synthetic_cohort(n_patients=n_patients, seed=seed, bad_rows=False)
    ids = {m: f"MRN{first_id + i:07d}" for i, m in enumerate(df["mrn"].unique())}  # new patients, new ids
    return df.assign(mrn=df["mrn"].map(ids))


def shifted(df: pd.DataFrame) -> pd.DataFrame:
    """An older, more diabetic case mix from one site: values the suite still accepts, distributions that moved."""
    rng = np.random.default_rng(5)
    age = pd.to_numeric(df["age"]).clip(upper=74) + 15
    glucose = pd.to_numeric(df["glucose"]) + 35
    site = np.where(rng.random(len(df)) < 0.8, "north", df["site"])
    return df.assign(age=age, glucose=glucose, site=site)


def mp(**kw) -> MonitorParams:
    return MonitorParams(**kw)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    ref = [50, 50, 50, 50]
    assert drift.psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi(ref, [40, 50, 50, 60]) < drift.psi(ref, [10, 30, 60, 100])
    assert drift.psi(ref, [0, 0, 0, 200]) > 1.0  # an emptied bin is a large shift, not an infinite one
    assert np.isfinite(drift.psi(ref, [0, 0, 0, 200]))


def test_bins_are_merged_until_each_holds_the_small_count_and_no_extreme_value_is_stored():
    x = np.r_[np.linspace(0, 1, 96), [50.0, 60.0, 70.0, 1000.0]]
    ref = reference.numeric_reference(x, bins=40, k=5)
    assert min(ref["counts"]) >= 5 and sum(ref["counts"]) == len(x)
    assert len(ref["edges"]) == len(ref["counts"]) - 1
    assert not {50.0, 60.0, 70.0, 1000.0, 0.0} & set(ref["edges"])  # outer bins are open: no min, no max
    few = reference.numeric_reference(np.array([1.0, 2.0, np.nan]), bins=10, k=5)
    assert few["suppressed"] and few["counts"] == [] and "mean" not in few
    cats = reference.categorical_reference(pd.Series(["a"] * 20 + ["b"] * 7 + ["c"] * 2 + ["d"] * 2), k=5)
    assert cats["counts"] == {"a": 20, "b": 7} and cats[reference.OTHER] == 0  # a pool of 4 is itself suppressed


def test_binned_ks_is_conservative_against_the_exact_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 800), rng.normal(0.35, 1, 300)
    ref = reference.numeric_reference(a, bins=10, k=5)
    d, p = drift.binned_ks(ref["counts"], reference.bin_counts(b, ref["edges"]))
    exact = stats.ks_2samp(a, b, method="asymp")
    assert 0 < d <= exact.statistic + 1e-12 and p >= exact.pvalue
    assert p < 0.01  # a third of a standard deviation in 300 rows is still found


def test_categorical_drift_names_new_categories_only_above_the_small_count():
    ref = reference.categorical_reference(pd.Series(["north"] * 40 + ["south"] * 40), k=5)
    batch = pd.Series(["north"] * 30 + ["south"] * 10 + ["west"] * 12 + ["moon"] * 3)
    out = drift.categorical_drift(ref, batch, mp(), k=5)
    assert out["new_categories"] == ["west"] and out["drifted"]
    assert out["shares"][reference.OTHER]["batch"] == pytest.approx(15 / 55)


def test_too_small_a_batch_is_not_judged_and_the_floor_reads_the_upper_bound():
    report = {
        "rows": 10,
        "features": {"age": {"drifted": True}},
        "score": {"drifted": True, "psi": 1.0},
        "performance": None,
    }
    assert drift.decide(report, mp(min_rows=50)) == []
    report["rows"] = 500
    report["features"] = {"age": {"drifted": False}}
    report["score"] = {"drifted": False, "psi": 0.01}
    report["performance"] = {"metric": "roc_auc", "value": 0.6, "ci_low": 0.5, "ci_high": 0.7}
    assert drift.decide(report, mp(performance_floor=0.65)) == []  # the CI still reaches the floor
    assert "below the floor 0.75" in drift.decide(report, mp(performance_floor=0.75))[0]


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, migrated_mlflow_db, prefect_server):
    """A clone whose champion was trained on 200 synthetic patients, with two new labelled batches waiting."""
    root = scratch_clone(tmp_path_factory.mktemp("monitor") / "medflow", migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    start = visits(200, seed=1, first_id=100000)
    start.to_csv(root / "data" / "visits.csv", index=False)
    (root / "incoming").mkdir()
    same = visits(150, seed=2, first_id=500000)
    same.to_csv(root / "incoming" / "2026-11.csv", index=False)
    moved = shifted(visits(150, seed=3, first_id=700000))
    moved.to_csv(root / "incoming" / "2026-12.csv", index=False)
    env = SALT | {"PREFECT_API_URL": prefect_server, "OMP_NUM_THREADS": "1"}
    before = {r["id"] for r in api(prefect_server, "/flow_runs/filter", {})}
    try:
        done = sh(f".venv/bin/medflow run {COHORT} {TINY} {NOT_DEPLOYED}", root, timeout=600, **env)
        assert "registered monitored v1 (champion" in done.stdout, done.stdout[-2000:]
        yield root, env, {"start": start, "same": same, "moved": moved}
    finally:
        # The session's server is shared: the scheduled-runs tests count from an empty one.
        for run in api(prefect_server, "/flow_runs/filter", {}):
            if run["id"] not in before:
                api(prefect_server, f"/flow_runs/{run['id']}", method="DELETE")


def api(url: str, path: str, body: dict | None = None, method: str = "POST"):
    import time
    import urllib.error
    import urllib.request

    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(f"{url}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    for attempt in range(20):
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                text = answer.read()
            return json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            # The server's SQLite database answers 503 while it records the runs' events.
            if exc.code != 503 or attempt == 19:
                raise
            time.sleep(1)


def registry(root):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_missing_batch_is_one_line_that_names_it(monitored):
    root, env, _ = monitored
    done = sh(".venv/bin/medflow monitor --batch incoming/2027-01.csv", root, check=False, **env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "monitor: batch incoming/2027-01.csv not found" in done.stderr


def test_an_unshifted_batch_is_reported_and_retrains_nothing(monitored):
    root, env, _ = monitored
    data_version = (root / "data.dvc").read_text()
    done = sh(".venv/bin/medflow monitor --batch incoming/2026-11.csv", root, **env)
    assert "monitored v1: ok: no drift" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "update:" not in done.stdout
    report = json.loads(next((root / "artifacts" / "monitor").glob("*/report.json")).read_text())
    assert report["drifted_features"] == [] and report["retrain_because"] == []
    assert report["performance"]["labelled_rows"] > 300 and report["performance"]["resampled"] == "patients"
    c = registry(root)
    assert [str(v.version) for v in c.search_model_versions("name='monitored'")] == ["1"]
    assert c.get_model_version("monitored", "1").tags["medflow.drift"].startswith("ok: no drift")
    assert (root / "data.dvc").read_text() == data_version


def test_scores_written_by_predict_are_checked_for_prediction_drift_once(monitored):
    root, env, _ = monitored
    predict = ".venv/bin/medflow predict --model models:/monitored@champion --input incoming/2026-12.csv"
    sh(f"{predict} --output scored/2026-12.csv", root, **env)
    done = sh(".venv/bin/medflow monitor --batch scored", root, **env)
    assert "monitored v1: drift: prediction drift" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "not retrained: the batch has no labels (outcome)" in done.stdout
    report = json.loads(sorted((root / "artifacts" / "monitor").glob("*/report.json"))[-1].read_text())
    assert report["features"] == {} and report["performance"] is None and report["files"] == ["scored/2026-12.csv"]
    assert [str(v.version) for v in registry(root).search_model_versions("name='monitored'")] == ["1"]
    again = sh(".venv/bin/medflow monitor --batch scored", root, **env)
    assert "nothing new in scored since the last check" in again.stdout


def data_files(root) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in root.glob("data/**/*")
        if p.is_file()
    }


def test_a_shifted_batch_is_reported_and_changes_no_data_unless_asked(monitored):
    root, env, _ = monitored
    data, record = data_files(root), (root / "data.dvc").read_text()
    done = sh(MONITOR, root, timeout=600, **env)
    out = done.stdout + done.stderr
    assert "monitored v1: drift:" in out and "age" in out and "glucose" in out, out[-3000:]
    assert (
        "data/ unchanged, not retrained: to add the labelled batch and retrain, run `medflow monitor --update`" in out
    )
    assert data_files(root) == data and (root / "data.dvc").read_text() == record
    assert [str(v.version) for v in registry(root).search_model_versions("name='monitored'")] == ["1"]


def test_a_shifted_batch_with_update_is_added_as_a_new_file_retrains_and_the_gate_decides(monitored):
    root, env, tables = monitored
    before, data = (root / "data.dvc").read_text(), data_files(root)
    done = sh(f"{MONITOR} --update", root, timeout=600, **env)
    out = done.stdout + done.stderr
    assert "monitored v1: drift:" in out and "age" in out and "glucose" in out, out[-3000:]
    batch = re.search(
        r"update: labelled batch added as (data/batches/visits/\S+-2026-12\.csv) .* retrained via in-process", out
    )
    assert batch, out[-3000:]
    batch = batch.group(1)

    c = registry(root)
    v2 = c.get_model_version("monitored", "2")
    gate = v2.tags["medflow.gate"]
    champion = str(c.get_model_version_by_alias("monitored", "champion").version)
    assert champion == ("2" if gate.startswith("promoted") else "1")  # the champion moves only through the gate
    assert f"v2 {gate}" in out
    # DVC recorded the data the candidate was trained on: one new file beside the untouched source; data.dvc moved.
    assert {k: v for k, v in data_files(root).items() if k != batch} == data
    assert len(pd.read_csv(root / batch)) == len(tables["moved"])
    assert (root / "data.dvc").read_text() != before
    assert "up to date" in sh(".venv/bin/dvc status", root).stdout
    assert (
        batch in v2.tags["medflow.data_batches"]
        and batch in sh(".venv/bin/medflow lineage models:/monitored/2", root).stdout
    )
    assert batch in (root / "artifacts" / "register" / "model_card.md").read_text()

    folder = sorted((root / "artifacts" / "monitor").glob("*/report.json"))[-1].parent
    report = json.loads((folder / "report.json").read_text())
    assert {"age", "glucose", "site"} <= set(report["drifted_features"])
    assert report["update"]["version"] == "2" and report["update"]["gate"] == gate
    assert {p.name for p in (folder / "plots").iterdir()} == {"feature_psi.png", "score.png"}
    tag = c.get_model_version("monitored", "1").tags["medflow.drift"]
    assert tag.startswith("drift:") and "monitoring/" in tag
    logged = {a.path for a in c.list_artifacts(c.get_model_version("monitored", "1").run_id, tag.split("(")[-1][:-1])}
    assert {f"{tag.split('(')[-1][:-1]}/{f}" for f in ("report.json", "report.md")} <= logged

    # Aggregates only: no identifier or record number of the batches in any report.
    text = "".join(p.read_text() for p in (root / "artifacts" / "monitor").rglob("*.json"))
    text += "".join(p.read_text() for p in (root / "artifacts" / "monitor").rglob("*.md"))
    batches = pd.concat([tables["same"], tables["moved"]])
    assert not any(str(v) in text for col in ("mrn", "name", "phone") for v in batches[col].unique())


def test_migrate_store_keeps_version_numbers_across_a_deleted_one(tmp_path, migrated_mlflow_db, monkeypatch):
    import shutil

    import mlflow
    from mlflow.entities import Metric

    from medflow.tracking.migrate import migrate

    monkeypatch.chdir(tmp_path)  # the target's default artifact root (./mlruns) lands here
    src_uri, dst_uri = (f"sqlite:///{shutil.copy(migrated_mlflow_db, tmp_path / n)}" for n in ("src.db", "dst.db"))
    src = registry_at(src_uri)
    exp = src.create_experiment("m", artifact_location=(tmp_path / "src-artifacts").as_uri())
    run = src.create_run(exp, run_name="r").info.run_id
    src.log_batch(run, metrics=[Metric("val_loss", v, 0, step) for step, v in enumerate((0.9, 0.7, 0.6))])
    (tmp_path / "card.md").write_text("# card\n")
    src.log_artifact(run, str(tmp_path / "card.md"))
    src.set_terminated(run)
    model = src.create_logged_model(exp, name="model", source_run_id=run)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    src.log_model_artifacts(model.model_id, str(tmp_path / "model"))
    mlflow.set_tracking_uri(src_uri)  # the registry finds logged models through the process's tracking URI
    src.create_registered_model("m", tags={"medflow.history.000001": "{}"}, description="what it is for")
    for n in range(3):
        src.create_model_version("m", f"models:/{model.model_id}", run, tags={"n": str(n)}, description=f"card {n}")
    src.delete_model_version("m", "2")
    src.set_registered_model_alias("m", "champion", "3")

    assert migrate(src_uri, dst_uri) == {"experiments": 1, "runs": 1, "models": 1, "versions": 2, "aliases": 1}
    dst = registry_at(dst_uri)
    versions = {str(v.version): (v.tags, v.description) for v in dst.search_model_versions("name='m'")}
    assert versions == {"1": ({"n": "0"}, "card 0"), "3": ({"n": "2"}, "card 2")}
    assert str(dst.get_model_version_by_alias("m", "champion").version) == "3"
    copied = dst.get_model_version("m", "3").run_id
    assert [m.value for m in dst.get_metric_history(copied, "val_loss")] == [0.9, 0.7, 0.6]
    assert [f.path for f in dst.list_artifacts(copied)] == ["card.md"]
    assert dst.get_registered_model("m").tags == {"medflow.history.000001": "{}"}
    with pytest.raises(ValueError, match=r"already has registered model\(s\) \['m'\]"):
        migrate(src_uri, dst_uri)


def registry_at(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_migrate_store_to_a_server_that_is_not_up_is_one_line_at_once(tmp_path, migrated_mlflow_db):
    (tmp_path / "mlruns").mkdir()
    shutil.copy(migrated_mlflow_db, tmp_path / "mlruns/mlflow.db")
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [str(VENV_BIN / "medflow"), "--root", str(tmp_path), "migrate-store", "--to", url],
        capture_output=True,
        text=True,
        env=user_env(tmp_path),
        timeout=60,
    )
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"medflow migrate-store: error: migrate-store: no MLflow server answers at {url}"), line
