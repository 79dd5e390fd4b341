"""The project's run lock: one pipeline run (or study) per project at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from medflow.paths import Paths


class Busy(RuntimeError):
    """Another `medflow run` holds the project's run lock."""


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
