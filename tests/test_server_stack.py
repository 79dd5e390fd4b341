"""The configuration a hospital runs, for real: MLflow and Prefect servers on PostgreSQL (databases of their own,
created and dropped here), the local registry migrated onto the MLflow server, a process worker running the
monitoring deployment, which finds drift and runs the training deployment through the same worker, whose candidate
the gate judges on the server. Commands as docs/team.md and docs/monitoring.md print them."""

from __future__ import annotations

import json
import os
import re
import urllib.request

import pytest
from test_monitor import COHORT, SALT, TINY, shifted, visits
from test_readme import CREATEDB, TO_SERVER, TRACKING_SERVER, Background, postgres_up
from usercmd import documented, free_port, scratch_clone, sh, wait_http

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

PREFECT_DB = "createdb -h 127.0.0.1 -U postgres prefect"
PREFECT_SERVER = (
    "PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 \\\n"
    "    PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/prefect \\\n"
    "    .venv/bin/prefect server start --host 127.0.0.1 --port 4200 &"
)
MIGRATE = ".venv/bin/medflow migrate-store --to http://127.0.0.1:5000"
POOL = ".venv/bin/prefect work-pool create medflow --type process"
DEPLOY = ".venv/bin/prefect deploy --all"
WORKER = (
    "DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 \\\n"
    "    .venv/bin/prefect worker start --pool medflow &"
)
MONITOR_NOW = ".venv/bin/prefect deployment run medflow-monitor/medflow-monitor --param update=true --watch"


def post(url: str, path: str, body: dict) -> list | dict:
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.loads(answer.read())


def store(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def snapshot(client, name: str) -> dict:
    """What a team must keep: every version's tags and card, the model's tags (history), aliases, run artifacts."""
    model = client.get_registered_model(name)
    versions = {}
    for v in client.search_model_versions(f"name = '{name}'"):
        files = sorted(f.path for f in client.list_artifacts(v.run_id))
        run = client.get_run(v.run_id)
        versions[str(v.version)] = {
            "tags": v.tags,
            "card": v.description,
            "artifacts": files,
            "metrics": run.data.metrics,
            "params": run.data.params,
        }
    return {
        "description": model.description,
        "tags": model.tags,
        "aliases": {a: str(n) for a, n in model.aliases.items()},
        "versions": versions,
    }


def test_servers_on_postgres_a_migrated_registry_and_flows_through_a_worker(tmp_path, migrated_mlflow_db):
    if not postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not listening on 127.0.0.1:5432")
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    printed = documented()
    assert all(c in printed for c in (PREFECT_DB, PREFECT_SERVER, MIGRATE, MONITOR_NOW))
    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    visits(200, seed=1, first_id=100000).to_csv(root / "data" / "visits.csv", index=False)
    (root / "incoming").mkdir()
    shifted(visits(150, seed=3, first_id=700000)).to_csv(root / "incoming" / "2026-12.csv", index=False)

    tag = f"{os.getpid()}_{free_port()}"
    mlflow_db, prefect_db = f"medflow_mlflow_{tag}", f"medflow_prefect_{tag}"
    mlflow_port, prefect_port = str(free_port()), str(free_port())

    def mine(command: str) -> str:
        """The printed command on this test's own databases and ports."""
        command = command.replace("5432/medflow", f"5432/{mlflow_db}")
        command = command.replace("postgres medflow", f"postgres {mlflow_db}").replace("5000", mlflow_port)
        return command.replace("5432/prefect ", f"5432/{prefect_db} ").replace(
            "postgres prefect", f"postgres {prefect_db}"
        )

    mlflow_url, prefect_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    env = SALT | {
        "OMP_NUM_THREADS": "1",
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env |= {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    started: list[Background] = []
    try:
        sh(mine(CREATEDB), root)
        sh(mine(PREFECT_DB), root)
        started.append(Background(mine(TRACKING_SERVER), root, root / "mlflow-server.log"))
        server = mine(PREFECT_SERVER).replace("4200", prefect_port)
        started.append(Background(server, root, root / "prefect-server.log", **env))
        wait_http(f"{mlflow_url}/health", started[0].proc, timeout=180, log=root / "mlflow-server.log")
        wait_http(f"{prefect_url}/health", started[1].proc, timeout=180, log=root / "prefect-server.log")
        env["PREFECT_API_URL"] = prefect_url

        # A team's history so far: trained on the project's SQLite store, then moved onto the server.
        done = sh(f".venv/bin/medflow run {COHORT} {TINY}", root, timeout=600, **env)
        assert "registered monitored v1 (champion" in done.stdout, done.stdout[-2000:]
        local = snapshot(store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"), "monitored")
        moved = sh(mine(MIGRATE), root, **env)
        assert re.search(r"1 models, 1 versions, 1 aliases", moved.stdout), moved.stdout
        assert snapshot(store(mlflow_url), "monitored") == local
        assert {"gate.json", "model_card.md", "model_card.json", "reference.json"} <= set(
            local["versions"]["1"]["artifacts"]
        )
        again = sh(mine(MIGRATE), root, check=False, **env)
        assert again.returncode == 2 and "already has registered model(s) ['monitored']" in again.stderr

        # From here on medflow works against the servers, switched by environment only.
        env["MLFLOW_TRACKING_URI"] = mlflow_url
        assert mine(TO_SERVER) == f"export MLFLOW_TRACKING_URI={mlflow_url}"
        sh(POOL, root, **env)
        sh(DEPLOY, root, **env)
        started.append(Background(WORKER, root, root / "worker.log", **env))
        out = sh(MONITOR_NOW, root, timeout=900, **env)
        assert "Flow run finished successfully" in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]

        runs = post(prefect_url, "/flow_runs/filter", {})
        by_flow = {}
        for run in (r for r in runs if not r["auto_scheduled"]):  # the schedules' future runs aside
            flow = post(prefect_url, "/flows/filter", {"flows": {"id": {"any_": [run["flow_id"]]}}})[0]["name"]
            by_flow.setdefault(flow, []).append(run)
        monitor_runs = by_flow["medflow-monitor"]
        trained = [r for r in by_flow["medflow-pipeline"] if r["deployment_id"]]
        assert [r["state_type"] for r in monitor_runs] == ["COMPLETED"]
        assert [r["state_type"] for r in trained] == ["COMPLETED"]  # the training deployment, run by the worker
        assert trained[0]["parent_task_run_id"]  # started by the monitoring run
        made = post(prefect_url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [monitor_runs[0]["id"]]}}})
        report = next(a for a in made if a["key"] == "drift-report")
        assert report["description"].startswith("drift:") and "Update: " in report["data"]

        server = store(mlflow_url)
        v1, v2 = (server.get_model_version("monitored", n) for n in ("1", "2"))
        assert v1.tags["medflow.drift"].startswith("drift:")
        gate = v2.tags["medflow.gate"]
        champion = str(server.get_model_version_by_alias("monitored", "champion").version)
        assert champion == ("2" if gate.startswith("promoted") else "1")
        assert "reference.json" in {f.path for f in server.list_artifacts(v2.run_id)}
        assert list((root / "mlruns" / "server-artifacts").rglob("MLmodel"))
    finally:
        for proc in reversed(started):
            proc.stop()
        for db in (mlflow_db, prefect_db):
            sh(f"dropdb -h 127.0.0.1 -U postgres --if-exists --force {db}", root, check=False)
    listed = sh("psql -h 127.0.0.1 -U postgres -Atc 'select datname from pg_database'", root).stdout.split()
    assert mlflow_db not in listed and prefect_db not in listed
