"""Scoring that refuses bad input: `medflow predict`, the registered pyfunc and `mlflow models serve` give one row
per input row, refuse a row with text in a numeric column with its reason, refuse a batch without a feature column
whole, and never quote an input value in a message."""

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_register import cohort, make_project, params_for
from usercmd import free_port, scratch_clone, sh, stop, user_env, wait_http

from medflow import tracking
from medflow.paths import Paths

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

SECRET = "PATIENT-SECRET-8841"  # text typed into the numeric column `a`
# As docs/predict.md prints it; the fixture's table stands in for the real one, with the same file name.
PREDICT = (
    ".venv/bin/medflow predict --model models:/medflow-breast-cancer@champion \\\n"
    "    --input data/breast_cancer.csv --output preds.csv"
)
# As docs/evidence.md prints them (one line each).
EXTERNAL = '.venv/bin/medflow evaluate-external --model models:/medflow-breast-cancer@champion --data data/site_b.csv --name "site B"'  # noqa: E501
EXPLAIN = ".venv/bin/medflow predict --model models:/medflow-breast-cancer@champion --input data/batch.csv --output scored.csv --explain 3"  # noqa: E501
THRESHOLD = 0.999  # far from 0.5, so labels show that evaluate's threshold travelled with the model


@pytest.fixture(scope="module")
def served(tmp_path_factory, migrated_mlflow_db):
    """A registered champion (no pipeline: the registry calls register makes) and a scratch clone on its store."""
    tmp = tmp_path_factory.mktemp("predict")
    work = make_project(tmp / "work", migrated_mlflow_db, cohort())
    run_id = tracking.start_run(params_for("medflow-breast-cancer"), work, "train")
    tracking.log_metrics(run_id, {"threshold": THRESHOLD})  # as evaluate logs it
    tracking.ensure_model("medflow-breast-cancer", "test model", {})
    version = tracking.register_version("medflow-breast-cancer", tracking.log_model(run_id, work.model_bundle), {})
    tracking.set_alias("medflow-breast-cancer", "champion", version)
    tracking.mark_complete("medflow-breast-cancer", version)
    root = scratch_clone(tmp / "proj", work.mlflow_db)
    batch = cohort(12)
    batch.loc[3, "a"] = SECRET
    batch.loc[5, "b"] = "inf"
    batch.loc[7, "a"] = "n/a"  # a missing value, imputed as in training
    batch.loc[9, "a"] = "5000.25"  # a unit slip: the training split's `a` lies around 50
    (root / "data").mkdir(exist_ok=True)
    batch.drop(columns=["y"]).to_csv(root / "data/breast_cancer.csv", index=False)
    return root, batch


def values_in(text: str, batch: pd.DataFrame) -> list[str]:
    """Input values (identifiers, the typed text, the numbers as written) found in text."""
    seeded = [SECRET, *batch["pid"], *batch["email"], *(v for v in batch["a"] if len(v) >= 5)]
    return [v for v in seeded if v in text]


def test_predict_writes_one_row_per_input_row_and_refuses_bad_rows_with_their_reason(served):
    root, batch = served
    done = sh(PREDICT, root)
    assert done.stdout.strip().splitlines()[-1] == (
        "preds.csv: 12 rows scored by medflow-breast-cancer v1, 9 ok, 3 refused (reason in the row's `reason` column)"
    )
    out = pd.read_csv(root / "preds.csv", keep_default_na=False)
    assert list(out.columns) == ["row", "model", "version", "label", "proba_no", "proba_yes", "status", "reason"]
    assert (
        out["row"].tolist() == list(range(1, 13))
        and set(out["model"]) == {"medflow-breast-cancer"}
        and set(out["version"]) == {1}
    )
    refused = out[out["status"] == "refused"]
    assert refused["row"].tolist() == [4, 6, 10]
    assert refused["reason"].tolist() == ["a: not a number", "b: not finite", "a: outside the training range"]
    assert (refused[["label", "proba_no", "proba_yes"]] == "").all().all()  # no score for a refused row
    ok = out[out["status"] == "ok"]
    assert (ok["reason"] == "").all() and ok["proba_yes"].astype(float).between(0, 1).all()
    assert ok["label"].tolist() == ["yes" if p >= THRESHOLD else "no" for p in ok["proba_yes"].astype(float)]
    assert values_in(done.stdout + done.stderr + (root / "preds.csv").read_text(), batch) == []


def test_a_batch_without_a_feature_column_is_refused_whole_and_nothing_is_written(served):
    root, batch = served
    batch.drop(columns=["y", "b"]).to_csv(root / "no_b.csv", index=False)
    command = (
        ".venv/bin/medflow predict --model models:/medflow-breast-cancer@champion --input no_b.csv --output no.csv"
    )
    done = sh(command, root, check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "predict: batch of 12 rows lacks 1 feature column(s) ['b']" in done.stderr
    assert not (root / "no.csv").exists()
    assert values_in(done.stdout + done.stderr, batch) == []

    (root / "scan.pdf").write_bytes(b"%PDF-1.4\x00\xff\xfe" + SECRET.encode() * 50)
    done = sh(
        ".venv/bin/medflow predict --model models:/medflow-breast-cancer/1 --input scan.pdf --output x.csv",
        root,
        check=False,
    )
    assert done.returncode == 2 and "predict: scan.pdf: " in done.stderr and SECRET not in done.stderr
    assert not (root / "x.csv").exists()


def test_registered_pyfunc_gives_status_per_row_and_names_columns_only(served):
    import mlflow

    from medflow.models.bundle import BatchRejected

    root, batch = served
    tracking.configure(Paths(root=root))
    model = mlflow.pyfunc.load_model("models:/medflow-breast-cancer@champion")
    raw = batch.drop(columns=["y"])
    out = model.predict(raw)
    assert len(out) == 12 and out["status"].tolist().count("refused") == 3
    assert out.loc[3, "reason"] == "a: not a number" and pd.isna(out.loc[3, "proba_yes"])
    typed = raw.drop(index=[3, 5, 9]).assign(a=lambda d: pd.to_numeric(d["a"], errors="coerce"))
    assert model.predict(typed)["status"].eq("ok").all()  # floats, as pd.read_csv reads them, score as before
    info = mlflow.models.get_model_info("models:/medflow-breast-cancer@champion")
    assert info.signature.inputs is None and info.metadata["features"] == {"numeric": ["a", "b"], "categorical": ["c"]}
    assert "status" in info.signature.outputs.input_names()
    with pytest.raises(BatchRejected) as refused:
        model.predict(raw.drop(columns=["a"]))
    assert "lacks 1 feature column(s) ['a']" in str(refused.value) and values_in(str(refused.value), batch) == []


def test_evaluate_external_and_predict_explain_through_the_executable(served):
    """Both are tested in process in test_evidence; here as a user types them, on another site's labelled table."""
    from mlflow import MlflowClient

    root, _ = served
    other = cohort(120)
    other.loc[:9, "a"] = "1000"  # outside the training range: refused, never scored nor explained
    other.to_csv(root / "data/site_b.csv", index=False)
    tracking.configure(Paths(root=root))
    before = MlflowClient().get_registered_model("medflow-breast-cancer").aliases

    done = sh(EXTERNAL, root)
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("medflow-breast-cancer v1 on site_B: roc_auc ") and "110 rows evaluated, 10 refused" in line
    assert (root / "artifacts/external/site_B-v1/report.md").is_file()
    version = tracking.get_version("medflow-breast-cancer", "1")
    assert version.tags["medflow.external.site_B"].startswith("roc_auc=")
    assert MlflowClient().get_registered_model("medflow-breast-cancer").aliases == before

    (root / "data/batch.csv").write_bytes((root / "data/site_b.csv").read_bytes())
    sh(EXPLAIN, root)
    out = pd.read_csv(root / "scored.csv")
    pairs = [f"explain_{i}_{part}" for i in (1, 2, 3) for part in ("feature", "value")]
    assert list(out.columns[-8:]) == [*pairs, "status", "reason"]
    ok = out["status"] == "ok"
    assert ok.sum() == 110 and (out.loc[~ok, "reason"] == "a: outside the training range").all()
    assert out.loc[ok, pairs[::2]].apply(set, axis=1).map(lambda cols: cols == {"a", "b", "c"}).all()
    assert out.loc[~ok, pairs].isna().all().all()


def test_flow_task_scores_with_the_same_code(served, tmp_path):
    from flows.predict import predict

    root, _ = served
    summary = predict.fn(
        "models:/medflow-breast-cancer@champion",
        str(root / "data/breast_cancer.csv"),
        str(tmp_path / "p.csv"),
        str(root),
    )
    assert summary == {"model": "medflow-breast-cancer", "version": "1", "rows": 12, "ok": 9, "refused": 3}
    assert len(pd.read_csv(tmp_path / "p.csv")) == 12


def test_mlflow_models_serve_answers_with_a_status_per_row_and_no_input_value(served, tmp_path):
    root, batch = served
    port = free_port()
    env = user_env(
        root,
        PATH=f"{root}/.venv/bin:{user_env(root)['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlruns/mlflow.db",
        # The model is copied before it is checked and loaded: a progress bar's rate ("50.41it/s") is no input value.
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    log = tmp_path / "serve.log"
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/medflow-breast-cancer@champion",
        "--env-manager",
        "local",
        "--port",
        str(port),
    ]
    with log.open("w") as fh:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, log=log)

        def post(body: bytes) -> tuple[int, str]:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "text/csv"}
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        status, text = post((root / "data/breast_cancer.csv").read_bytes())
        assert status == 200, text
        rows = json.loads(text)["predictions"]
        assert status == 200 and len(rows) == 12
        assert rows[3]["status"] == "refused" and rows[3]["reason"] == "a: not a number"
        assert rows[0]["status"] == "ok" and 0 <= rows[0]["proba_yes"] <= 1
        status, text = post(batch.drop(columns=["y", "a"]).to_csv(index=False).encode())
        assert status == 400 and "lacks 1 feature column(s) ['a']" in text
        assert values_in(text, batch) == [], text
        answer = json.loads(text)  # one line, and neither a traceback nor the server's files
        assert "\n" not in answer["message"] and "stack_trace" not in answer and ".py" not in text, text
    finally:
        stop(proc)
    assert values_in(log.read_text(), batch) == [], log.read_text()[-3000:]


def test_a_version_whose_files_changed_after_registration_is_not_run(tmp_path, migrated_mlflow_db):
    """Whoever can write the artifact store rewrites a version's code: medflow predict refuses it before importing
    anything of it; a version without the digest is refused until a person accepts its files."""
    from mlflow import MlflowClient

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    run_id = tracking.start_run(params_for("m"), work, "train")
    tracking.ensure_model("m", "test model", {})
    for _ in range(2):
        version = tracking.register_version("m", tracking.log_model(run_id, work.model_bundle), {})
        tracking.mark_complete("m", version)
    tracking.set_alias("m", "champion", "1")
    root = scratch_clone(tmp_path / "proj", work.mlflow_db)
    cohort(12).drop(columns=["y"]).to_csv(root / "batch.csv", index=False)
    marker = tmp_path / "ran.txt"
    store = f"sqlite:///{root}/mlruns/mlflow.db"
    client = MlflowClient(store, registry_uri=store)
    model_id = client.get_model_version("m", "1").source.removeprefix("models:/")
    code = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://")) / "model_code.py"
    code.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + code.read_text())

    done = sh(
        ".venv/bin/medflow predict --model models:/m@champion --input batch.csv --output p.csv", root, check=False
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "predict: m v1: its files differ from the ones registered (medflow.files_sha256)" in done.stderr
    assert "restore them from a backup" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists() and not (root / "p.csv").exists()

    client.delete_model_version_tag("m", "2", "medflow.files_sha256")  # as a version registered before the digest
    done = sh(".venv/bin/medflow predict --model models:/m/2 --input batch.csv --output p.csv", root, check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "predict: m v2 was registered without a digest of its files" in done.stderr
    assert "medflow accept-files m 2 --reason" in done.stderr and not (root / "p.csv").exists()
    sh(".venv/bin/medflow accept-files m 2 --reason 'rebuilt from run, diffed by hand'", root)
    assert (
        client.get_model_version("m", "2").tags["medflow.files_accepted_reason"] == "rebuilt from run, diffed by hand"
    )
    sh(".venv/bin/medflow predict --model models:/m/2 --input batch.csv --output p.csv", root)
    assert len(pd.read_csv(root / "p.csv")) == 12
    # mlflow.pyfunc.load_model as a user calls it, in a fresh process: refused before MLflow runs the model's code.
    load = f"import mlflow; mlflow.set_tracking_uri({store!r}); mlflow.pyfunc.load_model('models:/m@champion')"
    done = sh(f'.venv/bin/python -c "{load}"', root, check=False)
    assert done.returncode == 1 and "ModelFilesChanged: m v1: its files differ from the ones registered" in done.stderr
    assert not marker.exists()
