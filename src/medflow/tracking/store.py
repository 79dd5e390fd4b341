"""MLflow setup and run logging: the one place medflow sets the tracking and registry URIs.

mlflow is imported inside the functions: importing it costs seconds, and importing medflow must not
configure anything. Every param, tag and artifact passes the PHI scanner before it is written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medflow.paths import Paths
from medflow.privacy.scanner import assert_clean

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from medflow.params import Params

# mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; remembering what we exported keeps a later
# configure() for another project from mistaking our own value for a user's override.
_exported: str | None = None


def configure(paths: Paths) -> str:
    global _exported
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # pipeline logs, not a terminal
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    override = bool(env) and env != _exported
    uri = env if override else f"sqlite:///{paths.mlflow_db}"
    paths.mlruns.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _exported = None if override else uri
    return uri


def client() -> MlflowClient:
    from mlflow import MlflowClient

    if _exported is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        # Without it MLflow would quietly create ./mlflow.db wherever the process happens to run.
        raise RuntimeError("medflow.tracking.configure(paths) must be called first")
    return MlflowClient()


def is_local(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("sqlite", "file") or "://" not in uri


def experiment_id(name: str, paths: Paths) -> str:
    import mlflow

    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A local store gets its artifact folder next to the DB; a server decides its own artifact root.
    location = (paths.mlruns / "artifacts").as_uri() if is_local(mlflow.get_tracking_uri()) else None
    return c.create_experiment(name, artifact_location=location)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def start_run(params: Params, paths: Paths, run_name: str) -> str:
    """Creates a run without making it the process-wide active run, so steps can log from anywhere by id."""
    from mlflow.entities import Param, RunTag

    from medflow.tracking.lineage import lineage

    configure(paths)
    flat = {k: str(v) for k, v in flatten(params.as_dict()).items()}
    tags = lineage(params, paths)
    assert_clean(flat, f"params of run {run_name!r}")
    assert_clean(tags, f"tags of run {run_name!r}")
    c = client()
    run = c.create_run(experiment_id(params.register.experiment, paths), run_name=run_name)
    c.log_batch(
        run.info.run_id,
        params=[Param(k, v) for k, v in flat.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    return run.info.run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status)


def log_epoch(run_id: str, metrics: dict[str, float], step: int) -> None:
    """One log_batch per epoch: a log_metric call per value costs ~5 ms each."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_metrics(run_id: str, metrics: dict[str, float]) -> None:
    log_epoch(run_id, metrics, step=0)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    assert_clean(tags, "run tags")
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


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
