"""The only way medflow reaches MLflow. Importing this package imports no mlflow and configures nothing."""

from medflow.tracking.card import model_card
from medflow.tracking.gate import Decision, decide
from medflow.tracking.lineage import lineage, lineage_of_run
from medflow.tracking.registry import (
    Version,
    describe_version,
    log_model,
    metric_of,
    register_version,
    set_alias,
    version_by_alias,
)
from medflow.tracking.store import (
    configure,
    end_run,
    log_artifacts,
    log_epoch,
    log_metrics,
    set_tags,
    start_run,
)

__all__ = [
    "Decision",
    "Version",
    "configure",
    "decide",
    "describe_version",
    "end_run",
    "lineage",
    "lineage_of_run",
    "log_artifacts",
    "log_epoch",
    "log_metrics",
    "log_model",
    "metric_of",
    "model_card",
    "register_version",
    "set_alias",
    "set_tags",
    "start_run",
    "version_by_alias",
]
