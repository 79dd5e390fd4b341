"""What to run, as DVC finds it: the data's version (data.dvc against data/) and the stale stages of dvc.yaml.

DVC is asked once per run, before torch, MLflow or Prefect are imported; the answer is the list of steps the flow
runs. Nothing here hashes or caches for DVC, except one check DVC cannot make: DVC's state database keys a file's
hash on its inode, size and mtime, so a file rewritten in place with its size and mtime restored keeps its old hash.
The files validate reads are hashed whenever validate runs, so that a model never trains on data its lineage does not
name.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from medflow.console import say
from medflow.data import sources
from medflow.params import Params
from medflow.paths import STEPS, Paths


class DataVersionError(ValueError):
    """data/ and data.dvc disagree in a way only the user can settle (a `dvc pull` or `dvc checkout`)."""


def is_dvc_project(paths: Paths) -> bool:
    return (paths.root / ".dvc").is_dir() and (paths.root / "dvc.yaml").is_file()


def read_by_validate(params: Params, paths: Paths) -> list[Path]:
    """The tabular files validate reads (materialising a built-in demo); images are resolved by validate itself."""
    if params.data.kind != "tabular":
        return []
    return sources.source_files(params.data.source, paths, params.data.allowed_roots)


def ensure_data(params: Params, paths: Paths) -> None:
    """data/ ready and recorded: a fresh clone's demo rebuilt, a changed data/ recorded as a new data version, a
    data/ that another data.dvc left behind (a git checkout) stopped with the DVC command that fixes it."""
    if not (is_dvc_project(paths) and (paths.root / "data.dvc").exists()):
        read_by_validate(params, paths)
        return
    from dvc.repo import Repo

    with Repo(str(paths.root)) as repo:
        _ensure_data(repo, params, paths, rehash=False)


def plan(params: Params, paths: Paths, force: bool = False) -> list[str]:
    """The steps to run, from the first stage DVC finds stale to the end (all of them with force), once data/ is
    recorded (ensure_data)."""
    if not is_dvc_project(paths):
        read_by_validate(params, paths)
        return list(STEPS)
    from dvc.repo import Repo

    with Repo(str(paths.root)) as repo:
        recorded = (paths.root / "data.dvc").exists()
        if recorded:
            _rebuild_demo(repo, paths)
        read_by_validate(params, paths)  # a demo named as the source is written now, before DVC looks
        # The whole project at once: naming the six stages as targets makes DVC parse dvc.yaml and dvc.lock once per
        # target (~2x the time). A changed data/ shows as validate's dependency; other .dvc files are not steps.
        changed = {_stage_of(paths, key) for key in repo.status()}
        first = next((i for i, s in enumerate(STEPS) if s in changed), len(STEPS))
        todo = list(STEPS if force else STEPS[first:])
        if recorded:
            _ensure_data(repo, params, paths, rehash="validate" in todo)
    return todo


def _data_out(repo, paths: Paths):
    return repo.stage.collect(str(paths.root / "data.dvc"))[0].outs[0]


def _rebuild_demo(repo, paths: Paths) -> None:
    """A fresh clone has no DVC remote: the demo table that data.dvc records is rebuilt, and must be that version,
    before the chosen source adds a file of its own (a built-in cohort: a new data version)."""
    if paths.data_dir.exists():
        return
    sources.materialise_demo(sources.RECORDED_DEMO, paths.data_dir)
    out = _data_out(repo, paths)
    if (actual := out.get_hash().value) != (expected := out.hash_info.value):
        shutil.rmtree(paths.data_dir)  # ours: left behind, it would stand in the way of `dvc pull`
        raise DataVersionError(
            f"data/ is missing and data.dvc records {expected}, not the demo table medflow can rebuild ({actual}): "
            "fetch it with `dvc pull`, or, if data.dvc still records the demo, it is no longer reproducible with "
            "these package versions (see constraints.txt)"
        )


def _behind_dvcs_state(repo, files: list[Path], paths: Paths) -> list[Path]:
    """Files whose bytes differ from what data.dvc records for them while DVC's state still has the recorded hash:
    rewritten in place with size and mtime kept. A file data.dvc does not list is DVC's to find."""
    tree = _data_out(repo, paths).get_obj()
    if tree is None:  # the recorded version is not in DVC's cache: DVC compares the workspace with nothing
        return []
    recorded = {"/".join(key): hi.value for key, _, hi in tree}
    inside = [f for f in files if f.resolve().is_relative_to(paths.data_dir.resolve())]
    return [
        f for f in inside if (rel := f.resolve().relative_to(paths.data_dir.resolve()).as_posix()) in recorded
        and sources.file_md5(f) != recorded[rel]
    ]  # fmt: skip


def _ensure_data(repo, params: Params, paths: Paths, rehash: bool) -> None:
    _rebuild_demo(repo, paths)
    files = read_by_validate(params, paths)
    if rehash and (stale := _behind_dvcs_state(repo, files, paths)):
        # DVC's state misses on a new mtime and hashes the file again; the content already changed.
        for f in stale:
            os.utime(f)
    out = _data_out(repo, paths)
    expected, actual = out.hash_info.value, out.get_hash().value
    cache = repo.cache.local
    if actual == expected:
        if not cache.exists(expected):
            repo.commit(str(paths.root / "data.dvc"), force=True)  # fills the local cache so `dvc status` is clean
        return
    if cache.exists(actual):
        # data/ is a version DVC recorded before, and data.dvc now names another: a git checkout or pull moved
        # data.dvc and left the workspace behind. Recording data/ would train on the other branch's data.
        fix = "dvc checkout data.dvc" if cache.exists(expected) else "dvc pull data.dvc"
        raise DataVersionError(
            f"data/ holds data version {actual} but data.dvc records {expected} (changed by a git checkout?): run "
            f"`{fix}` and medflow run again; to keep data/ as it is, record it with `dvc add data`"
        )
    # Rows a user added, a table of their own, a batch `medflow monitor --update` wrote: a new data version.
    say(f"data/ changed since data.dvc ({expected} -> {actual}): recording the new version with DVC (dvc add data)")
    logging.getLogger("dvc").setLevel(logging.WARNING)
    repo.add(str(paths.data_dir))


def _stage_of(paths: Paths, key: str) -> str | None:
    """The stage of the project's dvc.yaml that a key of DVC's status names (`train`, or `DIR/dvc.yaml:train` from
    another working directory); None for any other .dvc file or dvc.yaml."""
    if ":" not in key:
        return key if Path.cwd().resolve() == paths.root.resolve() else None
    file, stage = key.rsplit(":", 1)
    return stage if (Path.cwd() / file).resolve() == (paths.root / "dvc.yaml").resolve() else None
