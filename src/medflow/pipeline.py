"""The wiring shared by both entry points: which steps exist, which are stale, and the DVC record.

Steps know nothing of Prefect or DVC; the Prefect flow (flows/pipeline.py) and `medflow step` (called by
dvc.yaml) both run steps through `run_step`, so the two paths cannot drift apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from medflow import imports
from medflow.data import sources
from medflow.params import Params
from medflow.paths import STEPS, Paths

_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    with imports.heavy():
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


# --- What DVC last found up to date, to say "nothing to do" without asking it again --------------------------------
#
# Asking DVC costs ~0.3 s of imports and status, and ensure_data hashes every byte of data/. Once DVC has found every
# stage up to date, the size, mtime, ctime and inode of every file its verdict rests on are kept; while none of them
# differs (no write, rename or chmod leaves a file's ctime as it was), the verdict stands, as DVC's own state cache
# and make assume. The files are listed before DVC looks, so that one changed meanwhile fails the next comparison.


def _ignored(root: Path) -> list[str]:
    """The .dvcignore patterns that name a file or folder anywhere (`__pycache__/`, `*.pyc`): DVC hashes none of
    them, so none can change its verdict. A pattern with a path in it is not applied: that costs a recheck, no more."""
    try:
        lines = (root / ".dvcignore").read_text().splitlines()
    except OSError:
        return []
    patterns = [line.strip().rstrip("/") for line in lines]
    return [p for p in patterns if p and not p.startswith(("#", "!")) and "/" not in p]


def _stats(root: Path, rel: str, ignored: list[str], into: dict) -> None:
    top = root / rel
    if not top.exists():
        into[rel] = None  # missing: appearing later is a change
        return
    walk = os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]
    for folder, dirs, files in walk:
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in ignored)]
        for name in files:
            if not any(fnmatch.fnmatch(name, p) for p in ignored):
                st = (Path(folder) / name).stat()
                rel_name = (Path(folder) / name).relative_to(root).as_posix()
                into[rel_name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def snapshot(paths: Paths) -> dict | None:
    """The files DVC's verdict on the pipeline rests on, with their stats: dvc.yaml and dvc.lock, data.dvc and the
    data's manifest in DVC's cache, the params files, and everything under each stage's deps and outs. None where
    dvc.yaml builds stages from templates (`${...}`, foreach, matrix), whose paths only DVC can tell, or a file
    vanishes while it is listed."""
    root = paths.root
    try:
        text = (root / "dvc.yaml").read_text()
        record = root / "data.dvc"
        data = yaml.load(record.read_text(), Loader=_FAST) if record.exists() else None
        if "${" in text or re.search(r"^\s*(foreach|matrix)\s*:", text, re.MULTILINE):
            return None
        names = {"dvc.yaml", "dvc.lock", "data.dvc", ".dvcignore", "params.yaml", "data"}
        for stage in (yaml.load(text, Loader=_FAST) or {}).get("stages", {}).values():
            for key in ("deps", "outs", "metrics", "plots"):
                names.update(next(iter(e)) if isinstance(e, dict) else e for e in stage.get(key) or [])
            names.update(next(iter(e)) for e in stage.get("params") or [] if isinstance(e, dict))  # a file of its own
        if data:
            md5 = data["outs"][0]["md5"]
            names.add(f".dvc/cache/files/md5/{md5[:2]}/{md5[2:]}")
        ignored, files = _ignored(root), {}
        for name in sorted(names):
            _stats(root, name, ignored, files)
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return {"version": 1, "files": files}


def _snapshot_file(paths: Paths) -> Path:
    return paths.artifacts_root / ".dvc-up-to-date.json"


def unchanged(paths: Paths) -> bool:
    """True while no file has changed since DVC last found every stage up to date."""
    try:
        kept = json.loads(_snapshot_file(paths).read_text())
    except (OSError, ValueError):
        return False
    return kept is not None and kept == snapshot(paths)


def _remember(paths: Paths, taken: dict | None) -> None:
    if taken is None:
        return
    file = _snapshot_file(paths)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(taken))
    os.replace(tmp, file)


def ensure_data(params: Params, paths: Paths) -> Path | None:
    """Materialises a demo source and keeps data.dvc true to data/.

    A fresh clone has no DVC remote, so the demo file is rebuilt from scikit-learn and must hash to what
    data.dvc records; a changed data/ (the user's own table) is recorded as a new data version.
    """
    record = paths.root / "data.dvc"
    recorded = is_dvc_project(paths) and record.exists()
    if not paths.data_dir.exists():
        # A fresh clone has no DVC remote: rebuild the demo table that data.dvc records, whatever the source, and
        # check it before the chosen source adds a file of its own (a built-in cohort: a new data version).
        sources.materialise_demo(sources.RECORDED_DEMO, paths.data_dir)
        if recorded and (actual := dir_md5(paths.data_dir)) != (expected := _recorded_md5(record)):
            raise DataVersionError(
                f"{paths.data_dir}: the rebuilt demo data hash to {actual}, but data.dvc records {expected}: "
                "fetch that version with `dvc pull` from the project's remote, or, if data.dvc still records the "
                "demo, it is no longer reproducible with these package versions (see constraints.txt)"
            )
    # Image sources (folders, manifests, built-in sets) are resolved by the image loader in `validate`.
    source = sources.resolve(params.data.source, paths) if params.data.kind == "tabular" else None
    if not (recorded and paths.data_dir.exists()) or unchanged(paths):
        return source
    expected = _recorded_md5(record)
    actual = dir_md5(paths.data_dir)
    from dvc.repo import Repo

    # The manifest in DVC's default cache is written last by a commit: with it there, the data are cached.
    cached = paths.root / ".dvc" / "cache" / "files" / "md5" / expected[:2] / expected[2:]
    if actual == expected and cached.is_file():
        return source
    with Repo(str(paths.root)) as repo:
        if actual == expected:
            repo.commit(str(record), force=True)  # fills the local cache so `dvc status` is clean
        else:
            # Rows a user (or `medflow monitor`) added, or another table: a new data version like any other change.
            print("data/ changed since data.dvc: recording the new version (as `dvc add data` would)")
            repo.add(str(paths.data_dir))
    return source


def _recorded_md5(record: Path) -> str:
    return yaml.load(record.read_text(), Loader=_FAST)["outs"][0]["md5"]


def stage_address(paths: Paths, step: str) -> str:
    # DVC resolves bare targets against the working directory; `medflow --root DIR` may run from elsewhere.
    return f"{paths.root / 'dvc.yaml'}:{step}"


def _stage_of(paths: Paths, key: str) -> str | None:
    """The stage of the project's dvc.yaml that a key of DVC's status names (`train`, or `DIR/dvc.yaml:train` from
    another working directory); None for any other .dvc file or dvc.yaml."""
    if ":" not in key:
        return key if Path.cwd().resolve() == paths.root.resolve() else None
    file, stage = key.rsplit(":", 1)
    return stage if (Path.cwd() / file).resolve() == (paths.root / "dvc.yaml").resolve() else None


def _stale(repo, paths: Paths) -> list[str]:
    taken = snapshot(paths)  # before DVC looks: see snapshot()
    # The whole project at once: naming the six stages as targets makes DVC parse dvc.yaml and dvc.lock once per
    # target (~2x the time). A changed data/ shows as validate's dependency; other .dvc files are not steps.
    changed = {_stage_of(paths, key) for key in repo.status()}
    first = next((i for i, s in enumerate(STEPS) if s in changed), len(STEPS))
    if first == len(STEPS):
        _remember(paths, taken)
    return list(STEPS[first:])


def stale_steps(paths: Paths) -> list[str]:
    """Steps to run: from the first stage DVC reports changed (or never run) to the end of the pipeline."""
    if not is_dvc_project(paths):
        return list(STEPS)
    if unchanged(paths):
        return []
    from dvc.repo import Repo

    with Repo(str(paths.root)) as repo:
        return _stale(repo, paths)


def record_in_dvc(paths: Paths, steps: list[str], check: bool = False) -> None:
    """Writes what the flow ran into dvc.lock, as `dvc repro` would have, so `dvc status` stays clean; with `check`
    (the run's last record), asks DVC whether it is, so that the next run need not."""
    if not steps or not is_dvc_project(paths):
        return
    from dvc.repo import Repo

    # DVC logs each lock update at INFO, which Prefect would print a second time.
    logging.getLogger("dvc").setLevel(logging.WARNING)
    with Repo(str(paths.root)) as repo:
        for step in steps:
            repo.commit(stage_address(paths, step), force=True)
        if check:
            _stale(repo, paths)


def record_elsewhere(root: str, steps: list[str], check: bool = False) -> None:
    """record_in_dvc as the sidecar process runs it."""
    # DVC's run cache resolves a stage's folder against the working directory: from anywhere else (`medflow --root`)
    # its commit fails with "file path ... is outside of DVC repo". This process is ours to move.
    os.chdir(root)
    record_in_dvc(Paths(root=Path(root)), steps, check)
