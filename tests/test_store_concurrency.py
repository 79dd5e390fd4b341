"""Four processes write one MLflow store at once: a fresh shared SQLite file, and a server on PostgreSQL.

Each creates a run, logs its metric and registers a version of one model through medflow's register step.
Every run must be recorded, versions numbered 1..4 without gaps, each complete, and the champion the best one.
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_register import cohort, make_project
from usercmd import free_port, serving

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

# The best is not last (a racy gate would leave a worse champion), and clearly best: the gate's paired test on the
# same test patients must find it superior to whichever version is champion when it registers.
AUCS = [0.91, 0.99, 0.93, 0.95]
WORKER = Path(__file__).with_name("register_worker.py")


@pytest.fixture(scope="module")
def template(tmp_path_factory, migrated_mlflow_db) -> Path:
    """A project with a tiny trained bundle, its data and split summary: what train and evaluate leave."""
    return make_project(tmp_path_factory.mktemp("concurrency") / "template", migrated_mlflow_db, cohort()).root


def writers(template: Path, tmp: Path, uri: str, name: str) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    procs = []
    for i, auc in enumerate(AUCS):
        root = shutil.copytree(template, tmp / f"writer{i}", symlinks=True)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(root), name, str(auc)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def check_store(uri: str, name: str, done: list[subprocess.CompletedProcess]) -> None:
    from mlflow import MlflowClient

    for d in done:
        assert d.returncode == 0 and "Traceback" not in d.stderr, d.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.metrics["test_roc_auc"] for r in runs) == sorted(AUCS)
    assert {r.info.status for r in runs} == {"FINISHED"}
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}
    assert {v.tags["medflow.state"] for v in versions} == {"complete"}
    champion = client.get_model_version_by_alias(name, "champion")
    assert client.get_run(champion.run_id).data.metrics["test_roc_auc"] == max(AUCS)


def test_four_writers_on_one_fresh_sqlite_store(template, tmp_path):
    db = tmp_path / "shared" / "mlflow.db"  # not migrated yet: the writers race to create it
    uri = f"sqlite:///{db}"
    done = writers(template, tmp_path, uri, "shared-sqlite")
    check_store(uri, "shared-sqlite", done)


@pytest.fixture
def postgres_db():
    """A database of its own on the machine's PostgreSQL (127.0.0.1:5432, user postgres), dropped afterwards."""
    import psycopg2

    name = f"medflow_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 (user postgres) is needed for this test: {exc}")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def mlflow_server(postgres_db, tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_db, "--artifacts-destination"]
    cmd += [str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with serving(cmd, env, f"{url}/health", tmp_path / "server.log"):
        yield url


def test_four_writers_on_an_mlflow_server_backed_by_postgresql(template, tmp_path, mlflow_server):
    done = writers(template, tmp_path, mlflow_server, "shared-server")
    check_store(mlflow_server, "shared-server", done)
