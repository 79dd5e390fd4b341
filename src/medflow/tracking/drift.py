"""The registry side of monitoring: a version's training reference, its drift reports and status tag.

The reference (`reference.json`, written by `register`) and each report (`monitoring/<UTC time>/`) are artifacts
of the version's training run, so a version's lineage page lists what it was trained on and how it has drifted.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from medflow.tracking.registry import Version, set_version_tags
from medflow.tracking.store import client, log_artifacts

DRIFT_TAG = "medflow.drift"


def reference_of(name: str, version: Version) -> dict:
    if not version.run_id:
        raise ValueError(f"{name} v{version.version} has no training run: no monitoring reference")
    c = client()
    if "reference.json" not in {f.path for f in c.list_artifacts(version.run_id)}:
        raise ValueError(
            f"{name} v{version.version} has no monitoring reference (reference.json on its run): it was registered "
            "before medflow stored one; retrain it (medflow run --force) to monitor it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(c.download_artifacts(version.run_id, "reference.json", tmp)).read_text())


def record(name: str, version: Version, report_dir: Path, status: str) -> str:
    """Logs the report folder on the version's run and sets its drift status tag; returns the artifact path."""
    artifact_path = f"monitoring/{report_dir.name}"
    log_artifacts(version.run_id, report_dir, artifact_path)
    set_version_tags(name, version.version, {DRIFT_TAG: f"{status} ({artifact_path})"[:5000]})
    return artifact_path


def version_numbers(name: str) -> list[int]:
    from mlflow.exceptions import MlflowException

    try:
        return sorted(int(v.version) for v in client().search_model_versions(f"name = '{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
