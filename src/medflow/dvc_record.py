"""The DVC record of a step the Prefect flow ran: its stage in dvc.lock, as `dvc repro` would have written it."""

from __future__ import annotations

import contextlib
import logging

from medflow.paths import Paths
from medflow.staleness import is_dvc_project


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
    # DVC's run cache resolves a stage's folder against the working directory: from anywhere else (`medflow --root`)
    # its commit fails with "file path ... is outside of DVC repo".
    with contextlib.chdir(paths.root), Repo(str(paths.root)) as repo:
        for step in steps:
            repo.commit(stage_address(paths, step), force=True)
