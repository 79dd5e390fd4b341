"""The held-out rows of the cleaned table as evaluate, the gate and the monitoring reference score them: each
model's probabilities (images and event grids by their row's position in images.npy, sequences.npy) and each row's
patient, for the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data import manifest
from medflow.evaluation.metrics import patient_groups
from medflow.models.bundle import Predictor
from medflow.paths import Paths
from medflow.sequences.steps import grid_of


def score(predictor: Predictor, paths: Paths, rows: pd.DataFrame, kind: str) -> np.ndarray:
    """Class probabilities, or a regression's predictions in the target's units (rows x 1)."""
    if kind == "image":
        return predictor.predict_proba(np.load(paths.images, mmap_mode="r")[rows.index.to_numpy()])
    if kind in ("events", "signals"):
        return predictor.predict_proba(grid_of(paths)[rows.index.to_numpy()])
    return predictor.outputs(rows)


def patient_keys(paths: Paths, row_ids: pd.Series) -> np.ndarray | None:
    return patient_groups(manifest.lookup(paths, "patient_key", row_ids, dtype="string"))
