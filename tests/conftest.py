import os
import shutil
from pathlib import Path

import pytest

# No tool may phone home from a test; set before any of them is imported.
os.environ.update(
    MLFLOW_DISABLE_TELEMETRY="true",
    DO_NOT_TRACK="1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    GX_ANALYTICS_ENABLED="false",
    DVC_NO_ANALYTICS="1",
    OMP_NUM_THREADS="1",
)
os.environ.pop("MLFLOW_TRACKING_URI", None)


# The modules that take longest, longest first (CPU seconds of one module, -n 0: run_faults 140, own_table 130,
# first_champion 72, exports 62, phi_e2e 55); the others follow in collection order. `--dist loadfile` hands whole
# modules to the two workers in this order (pyproject: --no-loadscope-reorder): xdist's own order, most tests first,
# would start these few-test modules last, and the suite would end on one worker running the longest alone.
LONGEST_FIRST = [
    "test_readme.py",
    "test_tune.py",
    "test_run_faults.py",
    "test_team_stack.py",
    "test_own_table.py",
    "test_first_champion.py",
    "test_data_versions.py",
    "test_monitor.py",
    "test_exports.py",
    "test_pipeline.py",
    "test_phi_e2e.py",
    "test_prefect.py",
    "test_server_stack.py",
    "test_gx_parity.py",
    "test_predict.py",
]


def pytest_collection_modifyitems(items):
    # A stable sort keeps each module's tests in file order: several modules' tests build on the one before.
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # 2 threads on a shared 2-core box run 6-7x slower than 1 when anything else is busy.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def salted():
    """The salt validate needs to replace a patient id by its salted key, for a module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDFLOW_SALT", "test-salt")
        yield


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """A fresh MLflow SQLite store costs ~9 s of migrations: pay it once and copy the file per test."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real `prefect server start` per session on a free loopback port, with its own home and SQLite database.

    Yields its PREFECT_API_URL. No UI, scheduler or late-runs service: triggered runs need none of them (the
    task-run recorder, which stores task runs from their events, must run).
    """
    import sys

    from usercmd import free_port, serving

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    cmd = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-ui", "--no-scheduler", "--no-late-runs"]
    url = f"http://127.0.0.1:{port}/api"
    with serving(cmd, env, f"{url}/health", home / "server.log", timeout=180):
        yield url


@pytest.fixture
def project(tmp_path, migrated_mlflow_db):
    """A project root in tmp_path with a migrated MLflow store, as medflow.paths.Paths."""
    from medflow.paths import Paths

    paths = Paths(root=tmp_path)
    paths.mlruns.mkdir(parents=True)
    shutil.copy(migrated_mlflow_db, paths.mlflow_db)
    return paths


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks_between_tests():
    """mlflow.set_tracking_uri and set_registry_uri export MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI, and the
    registry URI also stays in a module global that outranks a client's tracking_uri: one test's store must not
    become the next one's, in this process or in the subprocesses it starts."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    from mlflow.tracking._model_registry import utils as registry_utils

    registry_utils._registry_uri = None
    from medflow.tracking import store

    store._exported = None
