"""The servers a user starts: `medflow ui` answers before it prints its URL, opens the model-training view, ends
its web server however the command ends, and a busy port is one line at once; every server command the README
and docs print has its tools' telemetry off, as has every process medflow starts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from usercmd import free_port, scratch_clone, user_documents, user_env

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}


@pytest.fixture(scope="module")
def clone(tmp_path_factory, migrated_mlflow_db) -> Path:
    return scratch_clone(tmp_path_factory.mktemp("front-doors") / "medflow", migrated_mlflow_db)


def bare_env(root: Path) -> dict[str, str]:
    """A user's shell that sets none of the telemetry switches: medflow must set them itself."""
    return {k: v for k, v in user_env(root).items() if k not in QUIET}


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_ui(root: Path, port: int) -> tuple[subprocess.Popen, str]:
    """`medflow ui --port PORT` as typed, in a session of its own (a terminal's foreground job); returns the process
    once it printed its URL, and the URL, which must answer at the moment it is printed."""
    proc = subprocess.Popen(
        [str(root / ".venv/bin/medflow"), "ui", "--port", str(port)],
        cwd=root,
        env=bare_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline()
    url = re.search(r"(http://\S+)", line)
    assert url, f"no URL printed: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        assert answer.status == 200, "the URL was printed before the server answered"
    return proc, url.group(1)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to its process group (Ctrl-C)", "SIGHUP", "SIGKILL"])
def test_medflow_ui_ends_its_server_however_it_ends(clone, how):
    port = free_port()
    proc, url = start_ui(clone, port)
    try:
        assert url == f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
        server = descendants(proc.pid)
        assert server, "no server process under medflow ui"
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{server[0]}/environ").read_text().split("\0") if "=" in item
        )
        assert {k: environ.get(k) for k in QUIET} == QUIET, "medflow's server was started with telemetry on"
        if how == "SIGTERM":
            a_busy_port_is_one_line_at_once(clone, port)
        if how == "SIGHUP":
            opens_the_model_training_view(url)
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while any(alive(p) for p in server) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in server if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{how}: the web server outlived `medflow ui`"
    assert port_free(port), f"{how}: port {port} still held after `medflow ui` ended"


def a_busy_port_is_one_line_at_once(root: Path, port: int) -> None:
    t0 = time.monotonic()
    second = subprocess.run(
        [str(root / ".venv/bin/medflow"), "ui", "--port", str(port)],
        cwd=root,
        env=bare_env(root),
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    assert second.returncode == 2, second
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0], second.stderr
    assert took < 15, f"{took:.1f} s to say the port is busy"


def opens_the_model_training_view(url: str) -> None:
    """MLflow 3 opens on its GenAI view (traces, prompts, no registry) in a browser that never chose a view."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_readme import chrome

    browser = chrome()
    try:
        browser.get(url)
        body = browser.find_element(By.TAG_NAME, "body")
        WebDriverWait(browser, 60).until(lambda _: "Model registry" in body.text and "Default" in body.text)
        assert "Prompts" not in body.text, body.text[:500]
    finally:
        browser.quit()


# What each server a document prints needs to keep quiet; a worker runs flows that call MLflow, GX and DVC.
SWITCHES = {
    "prefect server start": {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"},
    "prefect worker start": {k: QUIET[k] for k in ("DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "GX_ANALYTICS_ENABLED")}
    | {"DVC_NO_ANALYTICS": "1"},
    "mlflow server": {"MLFLOW_DISABLE_TELEMETRY": "true"},
    "mlflow models serve": {"MLFLOW_DISABLE_TELEMETRY": "true"},
}


def printed_commands(doc: Path) -> list[str]:
    """Every logical command line of the document's fenced blocks (continuation lines joined)."""
    blocks = re.findall(r"^```[\w-]*\n(.*?)^```", doc.read_text(), flags=re.S | re.M)
    return [" ".join(line.split()) for block in blocks for line in re.split(r"(?<!\\)\n", block.replace("\\\n", " "))]


def test_every_printed_server_command_turns_telemetry_off():
    docs = user_documents()
    seen = {}
    for doc in docs:
        for command in printed_commands(doc):
            if command.lstrip().startswith("#"):
                continue
            for server, switches in SWITCHES.items():
                if re.search(rf"(^|[\s/]){server}\b", command):
                    seen[(doc.name, server)] = command
                    words = set(command.split())
                    missing = [f"{k}={v}" for k, v in switches.items() if f"{k}={v}" not in words]
                    assert not missing, f"{doc.name}: `{command}` lacks {missing}"
    printed = {server for _, server in seen}
    assert printed == set(SWITCHES), f"servers no longer printed: {set(SWITCHES) - printed}"
    assert ("cluster.md", "prefect worker start") in seen and ("team.md", "mlflow server") in seen
