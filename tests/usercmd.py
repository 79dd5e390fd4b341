"""Commands as a user types them: a scratch clone of the project and a shell where the venv is NOT activated.

The commands of README.md and docs/ are run through bash exactly as printed (`.venv/bin/medflow run ...`,
`make ui`), in a copy of the tracked and untracked-but-not-ignored files, which is what a fresh clone holds. `.venv`
in the copy is a link to the venv running the tests, so nothing is installed twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
GIT_ID = {
    "GIT_AUTHOR_NAME": "medflow-test",
    "GIT_AUTHOR_EMAIL": "test@medflow.invalid",
    "GIT_COMMITTER_NAME": "medflow-test",
    "GIT_COMMITTER_EMAIL": "test@medflow.invalid",
}


def user_documents() -> list[Path]:
    """What users read, every command of which a test runs: the README, the documentation site, the benchmarks."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]


def documented() -> str:
    """All user documents as one text: where a test finds the commands it runs as printed."""
    return "\n".join(doc.read_text() for doc in user_documents())


def project_files() -> list[str]:
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in done.stdout.split("\0") if f and (REPO / f).is_file()]


def scratch_clone(dest: Path, mlflow_db: Path | None = None) -> Path:
    """A fresh-clone-like copy of the project at dest, committed to its own git repo.

    Clone before training, never copy a trained clone: MLflow's SQLite store records absolute file:// artifact
    locations (experiments, model versions) and `dvc exp` absolute paths, so a copy would read and write the
    original's artifacts.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # copy2 keeps mtimes: a newer pyproject.toml would make `make` reinstall into the shared venv.
        shutil.copy2(REPO / rel, target)
    (dest / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    if mlflow_db is not None:
        (dest / "mlruns").mkdir(exist_ok=True)
        shutil.copy(mlflow_db, dest / "mlruns" / "mlflow.db")
    env = user_env(dest)
    for args in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "clone"]):
        subprocess.run(args, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def user_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user's shell: venv not activated, no server URIs, telemetry off."""
    venv_bins = {str(VENV_BIN), str(REPO / ".venv" / "bin"), str(root / ".venv" / "bin")}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_", "PYTEST_", "MEDFLOW_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p not in venv_bins)
    env.update(GIT_ID, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", DVC_NO_ANALYTICS="1")
    env.update(extra)
    return env


def sh(
    command: str, root: Path, *, timeout: float = 900, check: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """Runs one command line through bash in root, as typed; on failure shows its output's tail."""
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=root,
        env=user_env(root, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"`{command}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120, log: Path | None = None) -> None:
    """Until url answers; fails at once, with the server log's tail, when the server exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            pass
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode} before answering {url}\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer from {url} in {timeout:.0f} s\n{tail}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stops proc and all it started: proc must lead its own process group (start_new_session=True)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def serving(cmd: list[str], env: dict[str, str], health: str, log: Path, timeout: float = 120) -> Iterator[None]:
    """A server started in its own process group, logging to log, ready once health answers; stopped on exit."""
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(health, server, timeout=timeout, log=log)
            yield
        finally:
            stop(server, timeout=20)
