"""The step runner shared by both entry points.

Steps know nothing of Prefect or DVC; the Prefect flow (flows/pipeline.py) and `medflow step` (called by
dvc.yaml) both run steps through `run_step`, so the two paths cannot drift apart.
"""

from __future__ import annotations

import importlib
import shutil

from medflow.params import Params
from medflow.paths import STEPS, Paths


class StepFailed(RuntimeError):
    """A step's exception, with the step's name: what the one-line error message names."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"{step}: {type(cause).__name__}: {cause}")
        self.step, self.cause = step, cause


def run_step(name: str, params: Params, paths: Paths) -> dict:
    if name not in STEPS:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    module = importlib.import_module(f"medflow.steps.{name}")
    # As `dvc repro` does: a step starts from an empty folder, so nothing stale outlives a rerun.
    shutil.rmtree(paths.step_dir(name), ignore_errors=True)
    paths.step_dir(name).mkdir(parents=True, exist_ok=True)
    return module.run(params, paths)
