"""Model registry: log the pyfunc into a run, register versions, read and move aliases (no stages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medflow.privacy.scanner import assert_clean
from medflow.tracking.store import client


@dataclass(frozen=True)
class Version:
    version: str
    run_id: str | None
    tags: dict[str, str]


def log_model(run_id: str, bundle: Path) -> str:
    """Logs the bundle as a pyfunc model into an existing run and returns its model URI."""
    import mlflow

    from medflow.tracking import pyfunc

    assert_clean(Path(bundle), "model bundle")
    with mlflow.start_run(run_id=run_id):
        return pyfunc.log_model(Path(bundle))


def register_version(name: str, model_uri: str, tags: dict[str, str]) -> str:
    import mlflow

    assert_clean(tags, f"tags of a new version of {name}")
    return str(mlflow.register_model(model_uri, name, tags=tags).version)


def version_by_alias(name: str, alias: str) -> Version | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return Version(str(mv.version), mv.run_id, dict(mv.tags))


def metric_of(v: Version, key: str) -> float | None:
    """From the version's tags, else from its run: versions registered outside medflow carry no tags."""
    if key in v.tags:
        return float(v.tags[key])
    if v.run_id:
        return client().get_run(v.run_id).data.metrics.get(key)
    return None


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def describe_version(name: str, version: str, description: str) -> None:
    assert_clean(description, f"description of {name} v{version}")
    client().update_model_version(name, version, description=description)
