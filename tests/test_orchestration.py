"""The temporary Prefect server medflow starts for a run without PREFECT_API_URL."""

import os
import urllib.request

import pytest

from medflow.orchestration import CLIENT_CHECKS, TEMPORARY, TemporaryServer


def test_the_temporary_server_is_waited_for_after_the_work_meanwhile_runs_out_and_stops_with_its_variables(
    tmp_path, monkeypatch
):
    for name in ("PREFECT_API_URL", "PREFECT_UI_URL", TEMPORARY, *CLIENT_CHECKS):
        monkeypatch.delenv(name, raising=False)
    done = []
    server = TemporaryServer(tmp_path / ".prefect")
    try:
        assert os.environ["PREFECT_API_URL"] == server.api_url and os.environ[TEMPORARY] == "1"
        # Our own server, our own Prefect: no version or CSRF-token round trips at the start of each flow.
        assert all(os.environ[name] == "false" for name in CLIENT_CHECKS)
        # One chore takes no time: the server (~2.6 s to start) is still coming up when the chores run out.
        server.wait([lambda: done.append(1)])
        assert done == [1]
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=5) as answer:
            assert answer.status == 200
        # Its output is its own file's, not the command's: a caller reading medflow's output (CI, a pipe) would
        # otherwise wait for the server's shutdown after medflow has ended.
        for fd in (1, 2):
            assert os.readlink(f"/proc/{server.process.pid}/fd/{fd}") == str(server.log)
    finally:
        process = server.process
        server.stop()
    assert process.poll() is not None
    assert not {"PREFECT_API_URL", TEMPORARY, *CLIENT_CHECKS} & set(os.environ)


def test_flows_send_no_heartbeats_to_the_temporary_server_only(monkeypatch):
    # Prefect's heartbeat thread sleeps in 1 s steps and holds the end of every flow until it wakes; heartbeats
    # tell a lasting server that a run crashed, and the temporary one ends with its command.
    from prefect.settings import get_current_settings

    from medflow import orchestration

    monkeypatch.setattr(orchestration, "_server", None)
    with orchestration.flow_settings():
        assert get_current_settings().flows.heartbeat_frequency is not None
    monkeypatch.setattr(orchestration, "_server", object())
    with orchestration.flow_settings():
        assert get_current_settings().flows.heartbeat_frequency is None


def test_a_server_that_cannot_start_fails_in_one_line_with_its_last_words(tmp_path, monkeypatch):
    for name in ("PREFECT_API_URL", TEMPORARY, *CLIENT_CHECKS):
        monkeypatch.delenv(name, raising=False)
    # A database it cannot open: the server's start-up fails and it exits.
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db")
    server = TemporaryServer(tmp_path / ".prefect")
    try:
        with pytest.raises(RuntimeError, match=r"exited with code \d+ as it started: .*unable to open database") as e:
            server.wait()
        message = str(e.value)
        assert "\n" not in message and str(server.log) in message  # one line; the traceback stays in the file
        assert "Traceback" in server.log.read_text()
    finally:
        server.stop()
