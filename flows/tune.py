"""Hyperparameter search as a Prefect flow: the upstream steps a study reads (validate, clean, split), rerun only
when DVC reports them stale, then the study as one task (src/medflow/tuning/search.py).

Entry points: `medflow tune [--trials N] [--timeout S]`, and a deployment of `flows/tune.py:tune`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import record, step
from medflow import params as params_mod
from medflow.paths import Paths
from medflow.pipeline import StepFailed
from medflow.runlock import run_lock
from medflow.staleness import plan
from medflow.tuning import search as search_mod
from medflow.tuning.tuned import check_overrides

UPSTREAM = ("validate", "clean", "split")


# Results hold the study's summary only: names, counts and values of parameters, never rows.
@task(cache_policy=NO_CACHE, persist_result=False)
def search(
    params: dict, root: str, pipeline: str, params_file: str, trials: int | None, timeout_s: float | None
) -> dict:
    paths = Paths(root=Path(root), pipeline=pipeline)
    return search_mod.run(params_mod.from_dict(params), paths, Path(params_file), trials, timeout_s)


@flow(name="medflow-tune", log_prints=True, persist_result=False)
def tune(
    root: str = ".",
    params_file: str | None = None,
    overrides: list[str] | None = None,
    trials: int | None = None,
    timeout_s: float | None = None,
) -> dict:
    logger = get_run_logger()
    paths = Paths.for_params(root, params_file)
    file = Path(params_file) if params_file else paths.params_file
    check_overrides(overrides or [], file)
    # The study starts from the params file alone: an earlier study's tuned values do not steer this one.
    params = params_mod.load(file, overrides or [], tuned=False)
    with run_lock(paths):
        recorded = Path(file).resolve() == paths.params_file
        todo = [s for s in plan(params, paths, force=not recorded) if s in UPSTREAM]
        logger.info("upstream steps to run: %s", ", ".join(todo) or "none (up to date)")
        for name in todo:
            try:
                step.with_options(name=name, timeout_seconds=params.flow.timeout_s)(
                    name, params.as_dict(), str(paths.root), paths.pipeline
                )
                if recorded:
                    record.with_options(name=f"record-{name}")(name, str(paths.root))
            except Exception as exc:
                raise StepFailed(name, exc) from exc
        try:
            return search.with_options(timeout_seconds=params.flow.train_timeout_s)(
                params.as_dict(), str(paths.root), paths.pipeline, str(file), trials, timeout_s
            )
        except Exception as exc:
            raise StepFailed("tune", exc) from exc
