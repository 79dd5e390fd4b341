"""Scheduled runs against a real Prefect server, as docs/scheduling.md prints them: `medflow serve --cron ...`, and
`prefect deploy` of prefect.yaml to a process work pool with a worker; each triggered by `prefect deployment run`."""

import json
import re
import subprocess
import time
import urllib.request

import pytest
from usercmd import documented, scratch_clone, sh, stop, user_env

from medflow.paths import STEPS

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

# docs/scheduling.md, as printed; the server and PREFECT_API_URL are the session's own (conftest).
SERVE = '.venv/bin/medflow serve --cron "0 2 * * *"'
POOL = ".venv/bin/prefect work-pool create medflow --type process"
DEPLOY = ".venv/bin/prefect deploy --all"
WORKER = (
    "DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 \\\n"
    "    .venv/bin/prefect worker start --pool medflow &"
)
RUN_NOW = ".venv/bin/prefect deployment run medflow-pipeline/medflow-train --watch"


def api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def background(command: str, root, env: dict) -> subprocess.Popen:
    log = (root / f"{command.split('bin/', 1)[1].split()[1]}.log").open("w")  # serve.log, worker.log
    return subprocess.Popen(
        ["bash", "-c", command], cwd=root, env=user_env(root, **env), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def trigger(command: str, root, env: dict) -> str:
    """`prefect deployment run ... --watch` as a user types it; returns the flow run's id once it has ended."""
    out = sh(command, root, **env)
    assert "Flow run finished successfully" in out.stdout + out.stderr, out.stdout[-2000:]
    return re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)


def wait_for_deployment(url: str, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not api(url, "/deployments/filter", {"deployments": {"name": {"any_": [name]}}}):
        assert proc.poll() is None, f"the process serving {name} exited {proc.returncode}"
        assert time.monotonic() < deadline, f"{name} was not deployed in {timeout} s"
        time.sleep(1)


def task_runs(url: str, flow_run: str, expected: int) -> list[str]:
    """The server records task runs from their events, a moment after the flow run has ended."""
    deadline = time.monotonic() + 60
    while True:
        runs = api(url, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run]}}})
        if len(runs) >= expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(r["state_type"] == "COMPLETED" for r in runs), [(r["name"], r["state_type"]) for r in runs]
    return sorted(r["name"].rsplit("-", 1)[0] for r in runs)


def artifacts(url: str, flow_run: str) -> dict[str, dict]:
    return {a["key"]: a for a in api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run]}}})}


@pytest.fixture(scope="module")
def clone(tmp_path_factory, migrated_mlflow_db):
    root = scratch_clone(tmp_path_factory.mktemp("scheduled") / "medflow", migrated_mlflow_db)
    params = root / "params.yaml"
    params.write_text(
        params.read_text().replace("max_epochs: 200", "max_epochs: 3").replace("data_docs: true ", "data_docs: false")
    )
    return root


def test_medflow_serve_and_a_deployment_on_a_process_work_pool_complete_triggered_runs(clone, prefect_server):
    root, url = clone, prefect_server
    env = {"PREFECT_API_URL": url, "PREFECT_HOME": str(root / ".prefect"), "OMP_NUM_THREADS": "1"}
    # The serving process and the worker look for due runs every 10 s by default; a test has no time to spare.
    env |= {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}

    printed = documented()
    assert all(f"\n{c}" in printed for c in (SERVE, POOL, DEPLOY, WORKER, RUN_NOW))
    serve = background(SERVE, root, env)
    try:
        wait_for_deployment(url, "medflow-scheduled", serve)
        deployment = api(url, "/deployments/filter", {"deployments": {"name": {"any_": ["medflow-scheduled"]}}})[0]
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 2 * * *"]
        served = trigger(".venv/bin/prefect deployment run medflow-pipeline/medflow-scheduled --watch", root, env)
    finally:
        stop(serve)
    assert task_runs(url, served, 12) == sorted([*STEPS, *(f"record-{s}" for s in STEPS)])
    made = artifacts(url, served)
    assert {"test-metrics", "model-version", "run-summary"} <= set(made)
    table = json.loads(made["test-metrics"]["data"])
    assert {row["metric"] for row in table} >= {"test_roc_auc", "n_test", "gate"}
    assert "medflow-breast-cancer/versions/1" in made["model-version"]["data"]

    sh(POOL, root, **env)
    sh(DEPLOY, root, **env)
    worker = background(WORKER.removesuffix("&"), root, env)
    try:
        forced = trigger(RUN_NOW.replace(" --watch", " --param force=true --watch"), root, env)
        idle = trigger(RUN_NOW, root, env)
    finally:
        stop(worker)
    assert task_runs(url, forced, 12) == sorted([*STEPS, *(f"record-{s}" for s in STEPS)])
    assert {"test-metrics", "model-version"} <= set(artifacts(url, forced))
    # Nothing changed since: the scheduled run says so instead of retraining.
    assert task_runs(url, idle, 0) == []
    assert "Nothing to do" in artifacts(url, idle)["run-summary"]["data"]
    assert "up to date" in sh(".venv/bin/dvc status", root).stdout


def test_medflow_serve_without_a_server_says_what_to_do(clone):
    done = sh(SERVE, clone, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "PREFECT_API_URL" in done.stderr and "prefect server start" in done.stderr
