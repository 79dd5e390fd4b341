"""MLflow setup and run logging: the one place medflow sets the tracking and registry URIs.

mlflow is imported inside the functions: importing it costs seconds, and importing medflow must not
configure anything. Every param, tag and artifact passes the PHI scanner before it is written.

A local SQLite store is shared by every process of a project (and often by several projects): it is created
and migrated once under a file lock, and a write that finds it locked is retried with backoff.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from medflow.paths import Paths
from medflow.privacy.scanner import assert_clean

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from medflow.params import Params

# mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; remembering what we exported keeps a later
# configure() for another project from mistaking our own value for a user's override.
_exported: str | None = None
# Stores this process has already opened under the init lock.
_initialised: set[str] = set()

# Seconds MLflow's asynchronous logging gathers epochs for, before one write of them all (log_epoch).
ASYNC_BUFFER_S = 10
LOCKED = ("database is locked", "database table is locked")
LOCK_RETRIES = 6  # each try already waits up to MLflow's 20 s SQLite busy timeout


class StoreBusy(RuntimeError):
    pass


def _is_locked(exc: BaseException) -> bool:
    return any(s in str(exc) for s in LOCKED)


class _QuietLocked(logging.Filter):
    """MLflow logs a full traceback for every locked write before raising; the retry below handles it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_locked(record.getMessage())


_QUIET_LOCKED = _QuietLocked()


def retry_locked(fn, *args, **kwargs):
    delay = 0.5
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_locked(exc):
                raise
            if attempt == LOCK_RETRIES - 1:
                raise StoreBusy(
                    f"the MLflow store answered `database is locked` {LOCK_RETRIES} times over about a minute: "
                    "another process holds it"
                ) from None
            time.sleep(delay * (1 + random.random()))  # jitter keeps waiting writers from colliding again
            delay *= 2
    raise AssertionError("unreachable")


class _RetryingClient:
    """An MlflowClient whose every call is retried while SQLite reports the database locked."""

    def __init__(self, inner: MlflowClient) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        return functools.partial(retry_locked, attr) if callable(attr) else attr


def _initialise(uri: str) -> None:
    """Creates or migrates a SQLite store once, under a lock: concurrent first opens race Alembic and brick it."""
    if uri in _initialised:
        return
    if uri.startswith("sqlite:///"):
        from filelock import FileLock
        from mlflow import MlflowClient

        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{db}.init.lock"):
            fresh = MlflowClient(tracking_uri=uri, registry_uri=uri)
            retry_locked(fresh.search_experiments, max_results=1)
            retry_locked(fresh.search_registered_models, max_results=1)
    _initialised.add(uri)


def tracking_uri(paths: Paths) -> str:
    """The store medflow uses for this project: MLFLOW_TRACKING_URI when the user set one, else the project's."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env if env and env != _exported else f"sqlite:///{paths.mlflow_db}"


def configure(paths: Paths) -> str:
    global _exported
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # pipeline logs, not a terminal
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", str(ASYNC_BUFFER_S))
    import mlflow

    logging.getLogger("mlflow.store.db.utils").addFilter(_QUIET_LOCKED)  # added once, however often called
    uri = tracking_uri(paths)
    override = uri != f"sqlite:///{paths.mlflow_db}"
    paths.mlruns.mkdir(parents=True, exist_ok=True)
    flush()  # epochs logged against the store being left are written there
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _exported = None if override else uri
    _initialise(uri)
    return uri


def client() -> MlflowClient:
    """A client for the configured store."""
    from mlflow import MlflowClient

    if _exported is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        # Without it MLflow would quietly create ./mlflow.db wherever the process happens to run.
        raise RuntimeError("medflow.tracking.configure(paths) must be called first")
    return _RetryingClient(MlflowClient())


def flush() -> None:
    """Returns once the epochs handed to MLflow's asynchronous logging are in the configured store."""
    import mlflow

    if _initialised:  # before configure() MLflow's default store would be created in the working directory
        mlflow.flush_async_logging()


def is_local(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("sqlite", "file") or "://" not in uri


# MLflow 3 opens an experiment in its GenAI view unless told it holds model training.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str, paths: Paths) -> str:
    """One experiment per pipeline, named after the registered model it trains."""
    import mlflow
    from mlflow.exceptions import MlflowException

    c = client()
    found = c.get_experiment_by_name(name)
    if found is None:
        # A local store gets its artifact folder next to the DB; a server decides its own artifact root.
        location = (paths.mlruns / "artifacts").as_uri() if is_local(mlflow.get_tracking_uri()) else None
        try:
            return c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = c.get_experiment_by_name(name)  # another process created it first
    for k, v in EXPERIMENT_TAGS.items():
        if found.tags.get(k) != v:
            c.set_experiment_tag(found.experiment_id, k, v)
    return found.experiment_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def standard_tags(lineage: dict[str, str]) -> dict[str, str]:
    """The mlflow.* tags the UI shows as a run's source, user and commit (MLflow's fluent API sets them itself)."""
    from mlflow.entities import SourceType

    commit = lineage.get("medflow.git_commit", "unknown").removesuffix("-dirty")
    under_flow = lineage.get("medflow.flow_run_id", "none") != "none"
    tags = {
        # Program and subcommand words only: later arguments may be paths or override values.
        "mlflow.source.name": " ".join([Path(sys.argv[0]).name, *[a for a in sys.argv[1:] if a.isidentifier()][:2]]),
        "mlflow.source.type": SourceType.to_string(SourceType.JOB if under_flow else SourceType.LOCAL),
        "mlflow.user": getpass.getuser(),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def default_run_name(params: Params, lineage: dict[str, str]) -> str:
    """Model, data version and start time: runs of one experiment told apart at a glance."""
    data = lineage.get("medflow.data_md5", "missing")[:8]
    return f"{params.register.model_name}-data.{data}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


class OpenedRun(NamedTuple):
    run_id: str
    tags: dict[str, str]  # what it was created with: lineage, source, note
    describe: Callable[..., None]  # (more_tags=None): its params, with those tags, in one batch


def start_run(params: Params, paths: Paths, run_name: str | None = None) -> str:
    """Creates a run without making it the process-wide active run, so steps can log from anywhere by id."""
    run = open_run(params, paths, run_name)
    run.describe()
    return run.run_id


def open_run(params: Params, paths: Paths, run_name: str | None = None) -> OpenedRun:
    """start_run in two: the run, created with its tags, and a call that logs its params (and any later tags) in
    one batch. Each write to a SQLite store costs ~4 ms of the interpreter, and each batch its own checks of the run:
    train makes both calls from a thread, with its other inputs."""
    from mlflow.entities import Param, RunTag

    from medflow.data.sources import dataset_name
    from medflow.lineage import lineage

    configure(paths)
    flat = {k: str(v) for k, v in flatten(params.as_dict()).items()}
    tags = lineage(params, paths)
    run_name = run_name or default_run_name(params, tags)
    note = (
        f"medflow pipeline run: `{params.train.model}` for model `{params.register.model_name}` on "
        f"`{dataset_name(params.data.source)}`. Parameters hold params.yaml; tags `medflow.*` the code, data and "
        "params lineage; the register step adds the gate decision and the model version."
    )
    tags = {**standard_tags(tags), "mlflow.note.content": note, **tags}
    assert_clean(flat, f"params of run {run_name!r}")
    assert_clean(tags, f"tags of run {run_name!r}")
    experiment = experiment_id(params.register.model_name, paths)
    run_id = client().create_run(experiment, run_name=run_name, tags=tags).info.run_id

    def describe(more_tags: dict[str, str] | None = None) -> None:
        assert_clean(more_tags or {}, f"tags of run {run_name!r}")
        client().log_batch(
            run_id,
            params=[Param(k, v) for k, v in flat.items()],
            tags=[RunTag(k, str(v)) for k, v in (more_tags or {}).items()],
        )

    return OpenedRun(run_id, tags, describe)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    flush()
    client().set_terminated(run_id, status)


def end_orphaned_run(run_id: str) -> bool:
    """Marks KILLED a run that a killed process (SIGKILL, a lost node) left RUNNING; True when it was one."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        status = c.get_run(run_id).info.status
    except MlflowException:
        return False  # deleted, or recorded in another store
    if status != "RUNNING":
        return False
    c.set_terminated(run_id, "KILLED")
    return True


def log_epoch(run_id: str, metrics: dict[str, float], step: int) -> None:
    """One epoch's metrics, stamped with the time they were measured, handed to MLflow's asynchronous logging: its
    thread gathers them into one write every ASYNC_BUFFER_S (a write per epoch, a client and a SQLite transaction of
    ~14 statements, cost a third of a small model's training time). end_run and log_metrics write them first."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()], synchronous=False)


def log_metrics(run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    flush()
    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    assert_clean(tags, "run tags")
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_dataset(
    run_id: str, *, name: str, digest: str, source: dict[str, str], schema: str | None, profile: dict
) -> None:
    """The training data as MLflow shows it under a run's inputs: name, digest, source and counts, never rows."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    record = {"name": name, "digest": digest, "source": source, "profile": profile}
    assert_clean(record, f"dataset of run {run_id}")
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="local",
        source=json.dumps(source),
        schema=schema,
        profile=json.dumps(profile),
    )
    client().log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])


def log_training_data(run_id: str, lineage: dict[str, str], params: Params, paths: Paths, schema) -> None:
    """log_dataset for a pipeline's table: digest from the run's lineage tags, counts from the step summaries."""
    from mlflow.types.schema import ColSpec
    from mlflow.types.schema import Schema as ColumnSchema

    from medflow.data.sources import dataset_name

    rows = json.loads(paths.summary("split").read_text())["rows"]
    validated = json.loads(paths.summary("validate").read_text())
    # The table's columns as the model reads them (images have none to list).
    columns = [ColSpec("double", c, required=False) for c in schema.numeric]
    columns += [ColSpec("string", c, required=False) for c in schema.categorical]
    log_dataset(
        run_id,
        name=dataset_name(params.data.source),
        digest=lineage.get("medflow.data_md5", "missing")[:16],
        source={"uri": params.data.source, "dvc_md5": lineage.get("medflow.data_dvc_md5", "none")},
        schema=json.dumps({"mlflow_colspec": ColumnSchema(columns).to_dict()}) if columns else None,
        profile={
            "num_rows": sum(rows.values()),
            **{f"{split}_rows": n for split, n in rows.items()},
            "rows_in": validated["rows_in"],
            "num_features": len(schema.features),
        },
    )


def log_artifacts(run_id: str, local_path: Path, artifact_path: str | None = None) -> None:
    """A file or a folder; the scanner reads every text-like file in it before anything is uploaded."""
    local_path = Path(local_path)
    if not local_path.exists():
        raise FileNotFoundError(f"{local_path}: nothing to log")
    assert_clean(local_path, f"artifact {local_path.name}")
    c = client()
    if local_path.is_dir():
        c.log_artifacts(run_id, str(local_path), artifact_path)
    else:
        c.log_artifact(run_id, str(local_path), artifact_path)
