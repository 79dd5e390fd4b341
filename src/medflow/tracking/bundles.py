"""A registered version's medflow bundle, fetched from its pyfunc model's artifacts.

The gate scores the champion through medflow's own Predictor rather than `mlflow.pyfunc.load_model`: loading the
pyfunc puts the version's shipped copy of medflow on sys.path, inside a process that already runs medflow.
"""

from __future__ import annotations

from pathlib import Path


def download_bundle(name: str, version: str, dst: Path) -> Path:
    import mlflow
    from mlflow.models import Model

    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    artifacts = Model.load(root).flavors["python_function"]["artifacts"]
    return root / artifacts["bundle"]["path"]
