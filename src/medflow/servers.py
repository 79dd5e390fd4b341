"""Web servers that a medflow command starts and owns (`medflow ui`'s MLflow server, Prefect's temporary server).

A server runs in a session (process group) of its own: a Ctrl-C or a hang-up sent to the terminal reaches medflow,
which then stops the whole group, grandchildren included (`mlflow server` runs uvicorn as a child). It also gets
SIGTERM from the kernel when medflow dies, however it dies, so no server outlives its command holding its port.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn of a server's process: SIGTERM when the process that started it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PortBusy(ValueError):
    """The port a server was asked for is taken; the message names it and the option that changes it."""


def check_port(host: str, port: int, option: str = "--port") -> None:
    """Fails at once, naming the port and `option`, when another process listens on host:port; a server started
    there would fail only inside its own log, after its imports."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"host {host!r} does not resolve ({exc.strerror}): pass --host with a local address") from None
    with socket.socket(family, kind, proto) as sock:
        # As the server binds: a port left in TIME_WAIT by a stopped server is free to it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortBusy(
                    f"port {port} on {host} is in use (another `medflow ui`, or another server): "
                    f"pass a free one with {option}, e.g. {option} {port + 1}"
                ) from None
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror}): pass --host and {option}") from None


def url_host(host: str) -> str:
    """Where a local client reaches a server listening on host (a wildcard address means this machine)."""
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{local}]" if ":" in local else local


class WebServer:
    """A server process in its own process group, its output in `log`."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path):
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def wait_until_answers(self, url: str, timeout: float) -> None:
        """Returns once url answers 200; raises, with the server's last words, when it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                words = self.last_words()
                if "address already in use" in words.lower():
                    raise PortBusy(f"{words} (its whole output: {self.log})")
                raise RuntimeError(f"the server exited with code {code} as it started: {words} (log: {self.log})")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer {url} in {timeout:.0f} s (log: {self.log})")
            time.sleep(0.2)

    def last_words(self) -> str:
        """The server's last non-empty line of output, for a one-line error."""
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return (lines or ["it wrote nothing"])[-1][:300]

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left after `timeout`; returns once the port is free."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        # The group outlives its leader while a child (uvicorn) still shuts down.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
