"""The medflow pipeline as a Prefect flow: one coarse task per step, passing paths and small summaries.

Steps DVC reports unchanged are skipped (pass force=True to rerun all), and what ran is recorded in dvc.lock,
so this flow and `dvc repro` leave the same artifacts and the same record.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from medflow import params as params_mod
from medflow.paths import STEPS, Paths
from medflow.pipeline import ensure_data, record_in_dvc, run_step, stale_steps


# Results hold counts and metrics only, never rows; not persisting them keeps even those off Prefect's disk.
@task(cache_policy=NO_CACHE, persist_result=False, retries=0)
def step(name: str, params: dict, root: str, pipeline: str = "") -> dict:
    return run_step(name, params_mod.from_dict(params), Paths(root=Path(root), pipeline=pipeline))


@flow(name="medflow-pipeline", log_prints=True, persist_result=False)
def pipeline(
    root: str = ".", params_file: str | None = None, overrides: list[str] | None = None, force: bool = False
) -> dict:
    logger = get_run_logger()
    # Another params file than the project's writes its own artifacts/<name>/: it never clobbers the recorded one.
    paths = Paths.for_params(root, params_file)
    params = params_mod.load(Path(params_file) if params_file else paths.params_file, overrides or [])
    os.environ["MEDFLOW_FLOW_RUN_ID"] = str(flow_run.id or "none")
    ensure_data(params, paths)
    # Only a run of the committed params file is the pipeline's record; DVC's view of staleness is about that
    # file too, so an ad-hoc params file or override runs every step and leaves dvc.lock alone.
    recorded = params_file is None or (Path(params_file).resolve() == paths.params_file and not overrides)
    todo = stale_steps(paths) if recorded and not force else list(STEPS)
    if not todo:
        logger.info("every step is up to date (dvc status is clean); use --force to rerun")
        return {}
    logger.info("steps to run: %s", ", ".join(todo))
    summaries = {}
    for name in todo:
        summaries[name] = step.with_options(name=name)(name, params.as_dict(), str(paths.root), paths.pipeline)
    if recorded:
        record_in_dvc(paths, todo)
    return summaries
