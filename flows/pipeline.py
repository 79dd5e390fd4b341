"""The medflow pipeline as a Prefect flow: one coarse task per step, passing paths and small summaries.

Steps DVC reports unchanged are skipped (pass force=True to rerun all), and each step is recorded in dvc.lock as
soon as it finishes, so this flow and `dvc repro` leave the same artifacts and the same record, and a run killed
mid-way resumes at the step it was in. Retries and timeouts come from the `flow` section of params.yaml.
Entry points: `medflow run`, `medflow serve`, and the deployment in prefect.yaml (`flows/pipeline.py:pipeline`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from medflow import params as params_mod
from medflow.dvc_record import record_in_dvc
from medflow.paths import Paths
from medflow.pipeline import StepFailed, run_step
from medflow.runlock import run_lock
from medflow.staleness import plan

# Writes to MLflow and DVC can fail on a busy store or lock; a step's own error (bad input) fails the same again.
RETRIED = {"train", "register"}
PERMANENT = (params_mod.ParamsError, ValueError, KeyError, FileNotFoundError, TimeoutError)


def transient(task, task_run, state) -> bool:
    return not isinstance(state.result(raise_on_failure=False), PERMANENT)


# Results hold counts and metrics only, never rows; not persisting them keeps even those off Prefect's disk.
@task(cache_policy=NO_CACHE, persist_result=False)
def step(name: str, params: dict, root: str, pipeline: str = "") -> dict:
    return run_step(name, params_mod.from_dict(params), Paths(root=Path(root), pipeline=pipeline))


@task(cache_policy=NO_CACHE, persist_result=False)
def record(name: str, root: str) -> None:
    record_in_dvc(Paths(root=Path(root)), [name])


def model_link(model_name: str, version: str | int) -> str:
    """The version's page in the MLflow UI: the tracking server's own, else `medflow ui` on its default port."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/models/{model_name}/versions/{version}"


def publish(summaries: dict) -> None:
    """What the run produced, for the Prefect UI: counts, metrics and the gate decision, never rows."""
    metrics = summaries.get("evaluate") or {}
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if isinstance(v, int | float)]
    reg = summaries.get("register")
    if reg:
        gate = f"{'promoted' if reg['promoted'] else 'not promoted'}: {reg['reason']}"
        rows.append({"metric": "gate", "value": gate})
        create_link_artifact(
            key="model-version",
            link=model_link(reg["model_name"], reg["version"]),
            link_text=f"{reg['model_name']} v{reg['version']}",
            description="The model version this run registered",
        )
    if rows:
        create_table_artifact(key="test-metrics", table=rows, description="Test metrics and the gate decision")
    counts = [
        f"- {name}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if isinstance(v, int | float))
        for name, summary in summaries.items()
    ]
    create_markdown_artifact(key="run-summary", markdown="Steps run, with their counts:\n\n" + "\n".join(counts))


@flow(name="medflow-pipeline", log_prints=True, persist_result=False)
def pipeline(
    root: str = ".",
    params_file: str | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    steps: list[str] | None = None,
) -> dict:
    """steps: what `medflow run` found to run (it asks DVC before starting Prefect); None: ask DVC here."""
    logger = get_run_logger()
    # Another params file than the project's writes its own artifacts/<name>/: it never clobbers the recorded one.
    paths = Paths.for_params(root, params_file)
    params = params_mod.load(Path(params_file) if params_file else paths.params_file, overrides or [])
    os.environ["MEDFLOW_FLOW_RUN_ID"] = str(flow_run.id or "none")
    # A deployment's run reaches here without `medflow run`; in one that did, this process already holds the lock.
    with run_lock(paths):
        # Only a run of the committed params file is the pipeline's record; DVC's view of staleness is about that
        # file too, so an ad-hoc params file or override runs every step and leaves dvc.lock alone.
        recorded = params_file is None or (Path(params_file).resolve() == paths.params_file and not overrides)
        todo = plan(params, paths, force=force or not recorded) if steps is None else steps
        if not todo:
            logger.info("every step is up to date (dvc status is clean); use --force to rerun")
            create_markdown_artifact(
                key="run-summary", markdown="Nothing to do: every step is up to date (`dvc status` is clean)."
            )
            return {}
        logger.info("steps to run: %s", ", ".join(todo))
        f = params.flow
        retry = {"retries": f.retries, "retry_delay_seconds": exponential_backoff(f.retry_delay_s)}
        retry["retry_condition_fn"] = transient
        summaries: dict = {}
        # A step is finished, its record in dvc.lock included, before the next one starts: as under `dvc repro`, and
        # a run killed mid-way resumes at the step it was in.
        for name in todo:
            timeout = f.train_timeout_s if name == "train" else f.timeout_s
            run = step.with_options(name=name, timeout_seconds=timeout, **(retry if name in RETRIED else {}))
            with named(name):
                summaries[name] = run(name, params.as_dict(), str(paths.root), paths.pipeline)
                if recorded:
                    record.with_options(name=f"record-{name}", timeout_seconds=f.timeout_s, **retry)(
                        name, str(paths.root)
                    )
        with named(f"the run, after {todo[-1]} finished,"):
            publish(summaries)
        return summaries


@contextlib.contextmanager
def named(what: str) -> Iterator[None]:
    """A failure inside is raised as StepFailed(what); an interrupt carries `what` to the one-line error, unwrapped so
    that it still stops everything."""
    try:
        yield
    except Exception as exc:
        raise StepFailed(what, exc) from exc
    except BaseException as exc:
        exc.medflow_step = what
        raise
