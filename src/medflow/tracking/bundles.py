"""A registered version's medflow bundle, fetched from its pyfunc model's artifacts once they match their digest.

The gate and monitor score a version through medflow's own Predictor rather than `mlflow.pyfunc.load_model`:
loading the pyfunc puts the version's shipped copy of medflow on sys.path, inside a process that already runs medflow.
"""

from __future__ import annotations

from pathlib import Path


def download_bundle(name: str, version: str, dst: Path) -> Path:
    from mlflow.models import Model

    from medflow.tracking.integrity import verified_copy
    from medflow.tracking.registry import get_version

    root = verified_copy(name, version, get_version(name, version).tags, dst)
    artifacts = Model.load(root).flavors["python_function"]["artifacts"]
    return root / artifacts["bundle"]["path"]
