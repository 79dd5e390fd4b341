"""MLflow runs of a hyperparameter study: one parent run per study, one nested run per trial.

The study's own state (trials, values, pruning) lives in Optuna's storage, never in the MLflow store; MLflow
holds what a person browses: the parent run with the study's plots and best values, and each trial's parameters and
learning curves under it.
"""

from __future__ import annotations

from typing import Any

from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.scanner import assert_clean
from medflow.tracking.store import client, end_orphaned_run, set_tags, start_run


def start_study_run(params: Params, paths: Paths, study: str, resume_run: str | None) -> str:
    """The study's parent run; a resumed study (resume_run: the id it recorded) continues in the run it started."""
    from mlflow.exceptions import MlflowException

    if resume_run:
        try:
            client().update_run(resume_run, status="RUNNING")
            return resume_run
        except MlflowException:
            pass  # deleted, or in another store: start a new one
    run_id = start_run(params, paths, run_name=f"tune-{study}")
    set_tags(run_id, {"medflow.kind": "tune", "medflow.study": study})
    return run_id


def start_trial_run(parent: str, number: int, values: dict[str, Any]) -> str:
    from mlflow.entities import Param

    c = client()
    shown = {f"train.{k}": str(v) for k, v in values.items()}
    assert_clean(shown, f"params of trial {number}")
    experiment = c.get_run(parent).info.experiment_id
    tags = {"mlflow.parentRunId": parent, "medflow.kind": "tune-trial", "medflow.trial": str(number)}
    run = c.create_run(experiment, run_name=f"trial-{number}", tags=tags)
    c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in shown.items()])
    return run.info.run_id


def child_runs(parent: str) -> list:
    c = client()
    experiment = c.get_run(parent).info.experiment_id
    return c.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)


__all__ = ["child_runs", "end_orphaned_run", "start_study_run", "start_trial_run"]
