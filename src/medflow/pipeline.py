"""The wiring shared by both entry points: the run lock, the step runner, and the DVC record.

Steps know nothing of Prefect or DVC; the Prefect flow (flows/pipeline.py) and `medflow step` (called by
dvc.yaml) both run steps through `run_step`, so the two paths cannot drift apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from medflow import imports
from medflow.params import Params
from medflow.paths import STEPS, Paths
from medflow.staleness import is_dvc_project


class Busy(RuntimeError):
    """Another `medflow run` holds the project's run lock."""


class StepFailed(RuntimeError):
    """A step's exception, with the step's name: what the one-line error message names."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"{step}: {type(cause).__name__}: {cause}")
        self.step, self.cause = step, cause


# Roots whose run lock this process holds: the flow takes the lock that `medflow run` already took.
_held: dict[Path, int] = {}


@contextlib.contextmanager
def run_lock(paths: Paths, wait_s: float = 0.0) -> Iterator[None]:
    """One pipeline run per project at a time; a second waits up to wait_s, then raises Busy with the holder's PID.

    flock is released by the kernel when the holder dies, however it dies, so a killed run never leaves a stale lock.
    """
    if paths.root in _held:
        yield
        return
    lock = paths.artifacts_root / ".run.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise Busy(f"{paths.root} is busy: another medflow run (PID {holder}) holds {lock}") from None
            time.sleep(0.5)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[paths.root] = fd
    try:
        yield
    finally:
        del _held[paths.root]
        os.ftruncate(fd, 0)
        os.close(fd)


def run_step(name: str, params: Params, paths: Paths) -> dict:
    if name not in STEPS:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    with imports.heavy():
        module = importlib.import_module(f"medflow.steps.{name}")
    # As `dvc repro` does: a step starts from an empty folder, so nothing stale outlives a rerun.
    shutil.rmtree(paths.step_dir(name), ignore_errors=True)
    paths.step_dir(name).mkdir(parents=True, exist_ok=True)
    return module.run(params, paths)


def stage_address(paths: Paths, step: str) -> str:
    # DVC resolves bare targets against the working directory; `medflow --root DIR` may run from elsewhere.
    return f"{paths.root / 'dvc.yaml'}:{step}"


def record_in_dvc(paths: Paths, steps: list[str]) -> None:
    """Writes what the flow ran into dvc.lock, as `dvc repro` would have, so `dvc status` stays clean."""
    if not steps or not is_dvc_project(paths):
        return
    from dvc.repo import Repo

    # DVC logs each lock update at INFO, which Prefect would print a second time.
    logging.getLogger("dvc").setLevel(logging.WARNING)
    with Repo(str(paths.root)) as repo:
        for step in steps:
            repo.commit(stage_address(paths, step), force=True)


def record_elsewhere(root: str, steps: list[str]) -> None:
    """record_in_dvc as the sidecar process runs it."""
    # DVC's run cache resolves a stage's folder against the working directory: from anywhere else (`medflow --root`)
    # its commit fails with "file path ... is outside of DVC repo". This process is ours to move.
    os.chdir(root)
    record_in_dvc(Paths(root=Path(root)), steps)
