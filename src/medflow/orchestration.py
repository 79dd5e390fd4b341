"""Prefect's temporary API server, started by medflow as the command begins rather than by Prefect at its first call.

Without PREFECT_API_URL, Prefect starts the same uvicorn server itself when the flow first calls its API: the
command waits ~3 s for it after ~2 s of imports, and imports the server's app in the command's process too.
Started here, before the flows and the libraries they use are imported, it comes up on another core meanwhile.
It runs in a session of its own, so a Ctrl-C or a `timeout` sent to the terminal's process group stops medflow,
which then stops the server, instead of killing the server under a run that then retries it for minutes; and it
gets SIGTERM from the kernel when medflow dies, however it dies, so no server outlives its command.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from medflow import imports
from medflow.servers import die_with_parent

# Set while PREFECT_API_URL points at this command's own temporary server, which holds no deployments or workers.
TEMPORARY = "MEDFLOW_PREFECT_TEMPORARY"
CLIENT_CHECKS = ("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED")
# Read-only calls that a flow run's first requests would otherwise pay the server's lazy set-up for.
WARM_UP = [
    ("GET", "/admin/version"),
    ("POST", "/flows/filter"),
    ("POST", "/flow_runs/filter"),
    ("POST", "/task_runs/filter"),
]


class TemporaryServer:
    """One Prefect API server for the life of this command, on a free local port, with no UI."""

    def __init__(self, home: Path):
        self.home = home
        self.started = time.monotonic()
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.ready = threading.Event()
        self.answered = 0.0
        self._launch()
        threading.Thread(target=self._watch, name="medflow-server-watch", daemon=True).start()
        os.environ["PREFECT_API_URL"] = self.api_url
        os.environ[TEMPORARY] = "1"
        # It serves no UI, and is gone with the command: Prefect's "View at <URL>" line would lead nowhere. It is
        # the same Prefect, started without CSRF protection: the client's version and CSRF-token calls at the start
        # of a flow (~45 ms each) would ask what is known.
        wanted = {"PREFECT_UI_URL": "", **dict.fromkeys(CLIENT_CHECKS, "false")}
        self.settings = {k: v for k, v in wanted.items() if k not in os.environ}  # the user's own stay
        os.environ.update(self.settings)

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        # The socket is bound here and handed over: no other process can take the port between choosing and
        # binding it, and a request made before the server is up waits in the queue instead of being refused.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
            env |= {"PREFECT__SERVER_FINAL": "1", "PREFECT_HOME": str(self.home)}
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # where this process found medflow
            command = [sys.executable, "-m", "medflow.orchestration"]  # uvicorn's command line: see serve()
            command += ["--factory", "prefect.server.api.server:create_app", "--fd", str(sock.fileno())]
            command += ["--log-level", "error", "--lifespan", "on"]
            print(f"Starting temporary server on http://127.0.0.1:{self.port}", file=sys.stderr, flush=True)
            # Its output goes to a file, not to the command's: a caller that reads medflow's output (CI, a pipe,
            # subprocess.run) would otherwise wait for the server's ~0.3 s shutdown after medflow has ended.
            self.home.mkdir(parents=True, exist_ok=True)
            with self.log.open("wb") as log:
                self.process = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(sock.fileno(),),
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )

    def _watch(self) -> None:
        """Sets `ready` once the server answers, after asking it what a flow run asks first: its first answers
        take ~0.4 s of lazy set-up, done here while the command is still importing."""
        while self.process is not None and self.process.poll() is None:
            health = f"{self.api_url}/health"
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(health, timeout=2) as r:
                if r.status == 200:
                    self.answered = time.monotonic()
                    break
            time.sleep(0.05)  # not up yet, or not well yet: asked again, never in a busy loop
        else:
            return
        for method, path in WARM_UP:
            request = urllib.request.Request(
                f"{self.api_url}{path}", method=method, data=b"{}" if method == "POST" else None
            )
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answer.read()
            except (urllib.error.URLError, OSError):
                pass  # only a warm-up: the run's own calls report what is wrong
        self.ready.set()

    def wait(self, meanwhile: Iterable[Callable[[], object]] = ()) -> None:
        """Calls every `meanwhile` (work the run does anyway, done early), then returns once the server answers;
        the start-up limit counts from the launch, as Prefect's does."""
        for chore in meanwhile:
            with contextlib.suppress(Exception):
                chore()  # a failure comes again in the step that needs the work, named after it and retried there
        limit = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
        while not self.ready.wait(0.05):
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"Prefect's temporary server exited with code {code} as it started: {self._last_words()} "
                    f"(its whole output: {self.log}); or start one with `prefect server start` and set PREFECT_API_URL"
                )
            if time.monotonic() - self.started > limit:
                break
        if not self.ready.is_set() or self.answered - self.started > limit:
            # explain() in the CLI turns this message into its one-line advice.
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")

    def _last_words(self) -> str:
        """The exception the server died of (a traceback's last line), else its last line, for a one-line error."""
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line)]
        return (raised or lines or ["it wrote nothing"])[-1][:300]

    def stop(self, wait: bool = True) -> None:
        """Stops the server; without `wait`, for a process about to exit, it finishes its ~0.3 s shutdown alone."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10 if wait else 0)
        except subprocess.TimeoutExpired:
            if wait:
                self.process.kill()
                self.process.wait()
        self.process = None
        if os.environ.get(TEMPORARY):
            del os.environ[TEMPORARY], os.environ["PREFECT_API_URL"]
            for name in self.settings:
                os.environ.pop(name, None)


_server: TemporaryServer | None = None


def start_server(home: Path) -> None:
    """Starts the temporary server unless PREFECT_API_URL names one already."""
    global _server
    if os.environ.get("PREFECT_API_URL") or _server is not None:
        return
    _server = TemporaryServer(home)


def server_ready(meanwhile: Iterable[Callable[[], object]] = ()) -> None:
    """Waits for the temporary server, if this command started one; the server takes ~2.6 s to import its app on
    another core, time that `meanwhile` (the steps' own imports) fills."""
    if _server is not None:
        _server.wait(meanwhile)


@contextlib.contextmanager
def flow_settings() -> Iterator[None]:
    """Flows run without heartbeats on the temporary server: they tell a lasting server that a run crashed, and
    this one ends with its command, while Prefect's heartbeat thread holds the end of every flow for up to 1 s."""
    if _server is None:
        yield
        return
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def stop_server(wait: bool = True) -> None:
    global _server
    if _server is not None:
        _server.stop(wait)
        _server = None


def serve() -> None:
    """The temporary server's process: `uvicorn` with the arguments it was given, after Prefect's server app is
    imported with the cyclic collector off (medflow.imports: ~0.4 s less of the other core while the run starts)."""
    with imports.heavy():
        import prefect.server.api.server  # noqa: F401
        import uvicorn.main
    uvicorn.main.main(prog_name="uvicorn")


if __name__ == "__main__":
    serve()
