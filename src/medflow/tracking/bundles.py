"""A registered version's medflow bundle, fetched from its pyfunc model's artifacts once they match their digest.

The gate and monitor score a version through medflow's own Predictor rather than `mlflow.pyfunc.load_model`:
loading the pyfunc puts the version's shipped copy of medflow on sys.path, inside a process that already runs medflow.
`medflow predict` loads the pyfunc itself (registered_predictor), so a batch is scored as the registered model
scores it, threshold included.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medflow.models.bundle import Predictor
    from medflow.tracking.registry import Version


def download_bundle(name: str, version: str, dst: Path) -> Path:
    from mlflow.models import Model

    from medflow.tracking.integrity import verified_copy
    from medflow.tracking.registry import get_version

    root = verified_copy(name, version, get_version(name, version).tags, dst)
    artifacts = Model.load(root).flavors["python_function"]["artifacts"]
    return root / artifacts["bundle"]["path"]


@contextmanager
def registered_predictor(name: str, version: Version) -> Iterator[Predictor]:
    """The version's Predictor as its registered pyfunc loads it, from a copy of its files checked against their
    digest: the copy checked is the copy loaded, and its code stays importable while the caller scores."""
    import mlflow.pyfunc

    from medflow.tracking.integrity import verified_copy

    with tempfile.TemporaryDirectory() as tmp:
        model = mlflow.pyfunc.load_model(str(verified_copy(name, version.version, version.tags, Path(tmp))))
        yield model.unwrap_python_model().predictor
