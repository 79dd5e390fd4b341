"""The Prefect server a run reports to: PREFECT_API_URL's, else Prefect's own temporary server, set up through
Prefect's public settings only."""

import ast
import os
import subprocess
import sys
import urllib.request

import pytest
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from medflow import orchestration


@pytest.fixture
def no_server(tmp_path):
    """No PREFECT_API_URL, and a home of the test's own for the temporary server's database."""
    updates = {"api.url": None, "home": tmp_path / ".prefect", "server.ephemeral.enabled": True}
    updates["server.ephemeral.startup_timeout_seconds"] = 600  # as the CLI's: a busy box has taken minutes
    with temporary_settings(updates=updates):
        yield


@pytest.mark.full  # a temporary server's start (test-fast's smoke run starts one): `make test`, not `make test-fast`
def test_without_a_configured_server_prefect_starts_its_own_and_the_run_reaches_it(no_server):
    from prefect.client.orchestration import get_client

    assert orchestration.temporary()
    orchestration.connect()
    with get_client(sync_client=True) as client:
        url = client.api_url
        assert client.server_type.value == "EPHEMERAL"
    with urllib.request.urlopen(f"{str(url).rstrip('/')}/health", timeout=10) as answer:
        assert answer.status == 200


@pytest.mark.full  # a start that fails after its time-out, in a process of its own: `make test`, not `make test-fast`
def test_a_temporary_server_that_does_not_start_is_a_one_line_error_with_its_fix(tmp_path):
    # A process of its own: Prefect keeps one temporary server per process, and an earlier test's is up.
    probe = (
        "from medflow import orchestration; from medflow.errors import explain\n"
        "try:\n    orchestration.connect()\nexcept orchestration.ServerUnavailable as exc:\n    print(explain(exc))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / ".prefect"),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
        # A database it cannot open: the server's start-up fails, and Prefect waits out its start-up timeout.
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "3",
    }
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    what, todo, code = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert what.startswith("Prefect's temporary server did not start") and "\n" not in what
    assert "PREFECT_API_URL" in todo and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in todo and code == 1


def test_a_configured_server_is_used_as_it_is():
    with temporary_settings(updates={"api.url": "http://127.0.0.1:4200/api"}):
        assert not orchestration.temporary()
        orchestration.connect()  # nothing started, nothing asked: the run's own calls report what is wrong
        assert PREFECT_API_URL.value() == "http://127.0.0.1:4200/api"


def test_flows_send_no_heartbeats_to_the_temporary_server_only(no_server):
    # Prefect's heartbeat thread sleeps in 1 s steps and holds the end of every flow until it wakes; heartbeats
    # tell a lasting server that a run crashed, and the temporary one ends with its command.
    with orchestration.flow_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    with temporary_settings(updates={"api.url": "http://127.0.0.1:4200/api"}), orchestration.flow_settings():
        assert get_current_settings().flows.heartbeat_frequency is not None


def test_ctrl_c_that_prefect_meets_as_a_task_starts_is_still_an_interrupt():
    """Ctrl-C landing in Prefect's task engine before the task run exists: Prefect, handling it, raises its own
    "Task run is not set", which the step wraps. The user pressed Ctrl-C: the line says so, and the exit is 130."""
    from medflow.errors import explain
    from medflow.interrupts import Interrupted
    from medflow.pipeline import StepFailed

    try:
        try:
            raise Interrupted("SIGINT")
        except Interrupted:
            raise ValueError("Task run is not set")  # noqa: B904 (as Prefect raises it: its context is the interrupt)
    except ValueError as exc:
        failed = StepFailed("register", exc)
    what, _, code = explain(failed)
    assert (what, code) == ("register interrupted (SIGINT)", 130)
