"""The wiring shared by both entry points: which steps exist, which are stale, and the DVC record.

Steps know nothing of Prefect or DVC; the Prefect flow (flows/pipeline.py) and `medflow step` (called by
dvc.yaml) both run steps through `run_step`, so the two paths cannot drift apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from medflow.data import sources
from medflow.params import Params
from medflow.paths import STEPS, Paths


class DataVersionError(RuntimeError):
    pass


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
    module = importlib.import_module(f"medflow.steps.{name}")
    # As `dvc repro` does: a step starts from an empty folder, so nothing stale outlives a rerun.
    shutil.rmtree(paths.step_dir(name), ignore_errors=True)
    paths.step_dir(name).mkdir(parents=True, exist_ok=True)
    return module.run(params, paths)


def is_dvc_project(paths: Paths) -> bool:
    return (paths.root / ".dvc").is_dir() and (paths.root / "dvc.yaml").is_file()


def dir_md5(folder: Path) -> str:
    """DVC's hash of a directory output: md5 of the sorted (md5, relpath) listing, with a .dir suffix."""
    ignored = {".gitignore", ".DS_Store"}
    entries = [
        {"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ignored
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def ensure_data(params: Params, paths: Paths) -> Path | None:
    """Materialises a demo source and keeps data.dvc true to data/.

    A fresh clone has no DVC remote, so the demo file is rebuilt from scikit-learn and must hash to what
    data.dvc records; a changed data/ (the user's own table) is recorded as a new data version.
    """
    rebuilt = not paths.data_dir.exists()
    if rebuilt:
        # A fresh clone has no DVC remote: rebuild the demo table that data.dvc records, whatever the source.
        sources.materialise_demo(sources.RECORDED_DEMO, paths.data_dir)
    # Image sources (folders, manifests, built-in sets) are resolved by the image loader in `validate`.
    source = sources.resolve(params.data.source, paths) if params.data.kind == "tabular" else None
    record = paths.root / "data.dvc"
    if not (is_dvc_project(paths) and record.exists() and paths.data_dir.exists()):
        return source
    expected = yaml.safe_load(record.read_text())["outs"][0]["md5"]
    actual = dir_md5(paths.data_dir)
    from dvc.repo import Repo

    # The manifest in DVC's default cache is written last by a commit: with it there, the data are cached.
    cached = paths.root / ".dvc" / "cache" / "files" / "md5" / expected[:2] / expected[2:]
    if actual == expected and cached.is_file():
        return source
    with Repo(str(paths.root)) as repo:
        if actual == expected:
            repo.commit(str(record), force=True)  # fills the local cache so `dvc status` is clean
        elif rebuilt:
            # Only a table rebuilt just now is in question: rows a user (or `medflow monitor`) added to the demo
            # file make a new data version like any other change.
            raise DataVersionError(
                f"{paths.data_dir}: the rebuilt demo data hash to {actual}, but data.dvc records {expected}: "
                "fetch that version with `dvc pull` from the project's remote, or, if data.dvc still records the "
                "demo, it is no longer reproducible with these package versions (see constraints.txt)"
            )
        else:
            print("data/ changed since data.dvc: recording the new version (as `dvc add data` would)")
            repo.add(str(paths.data_dir))
    return source


def stage_address(paths: Paths, step: str) -> str:
    # DVC resolves bare targets against the working directory; `medflow --root DIR` may run from elsewhere.
    return f"{paths.root / 'dvc.yaml'}:{step}"


def stale_steps(paths: Paths) -> list[str]:
    """Steps to run: from the first stage DVC reports changed (or never run) to the end of the pipeline."""
    if not is_dvc_project(paths):
        return list(STEPS)
    from dvc.repo import Repo

    with Repo(str(paths.root)) as repo:
        changed = repo.status(targets=[stage_address(paths, s) for s in STEPS])
    first = next((i for i, s in enumerate(STEPS) if any(k.split(":")[-1] == s for k in changed)), len(STEPS))
    return list(STEPS[first:])


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
