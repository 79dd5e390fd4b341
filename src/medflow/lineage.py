"""Lineage tags put on every run and model version: which code, data and params produced it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from medflow.paths import Paths

if TYPE_CHECKING:
    from medflow.params import Params


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(root: Path) -> str:
    sha = _git(root, "rev-parse", "HEAD")
    if sha is None:
        return "unknown"
    return f"{sha}-dirty" if _git(root, "status", "--porcelain") else sha


def dvc_md5(dvc_file: Path) -> str:
    if not dvc_file.exists():
        return "none"
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "none"))


def lineage(params: Params, paths: Paths) -> dict[str, str]:
    from medflow.data.sources import SourceError, file_md5, source_files

    try:
        source, *batches = source_files(params.data.source, paths)
        data_md5 = file_md5(source)
    except SourceError:
        # Registering an already trained model must not fail because the raw file has since moved.
        data_md5, batches = "missing", []
    return {
        "medflow.git_commit": git_commit(paths.root),
        "medflow.data_md5": data_md5,
        # The labelled batches `medflow monitor --update` added, which validate read after data.source.
        "medflow.data_batches": ", ".join(f"{f.relative_to(paths.root).as_posix()} ({file_md5(f)})" for f in batches)
        or "none",
        "medflow.data_dvc_md5": dvc_md5(paths.root / "data.dvc"),
        "medflow.params_hash": params.digest(),
        "medflow.flow_run_id": os.environ.get("MEDFLOW_FLOW_RUN_ID") or "none",
        # Set by DVC in every stage of `dvc exp run`: such runs are experiments, challengers at most.
        "medflow.dvc_experiment": os.environ.get("DVC_EXP_NAME") or "none",
    }
