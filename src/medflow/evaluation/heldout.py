"""The held-out rows of the cleaned table as evaluate, the gate and the monitoring reference score them: each
model's probabilities (images and event grids by their row's position in images.npy, sequences.npy) and each row's
patient, for the bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data import manifest
from medflow.data.image_store import ImageStore, rechunk
from medflow.evaluation.metrics import patient_groups
from medflow.models.bundle import Predictor
from medflow.paths import Paths
from medflow.sequences.steps import grid_of

SCORE_CHUNK_MB = 64  # images read from the store per call of the model


def score(predictor: Predictor, paths: Paths, rows: pd.DataFrame, kind: str) -> np.ndarray:
    """Class probabilities, or a regression's predictions in the target's units (rows x 1)."""
    if kind == "image":
        return score_images(predictor, paths.images, rows.index.to_numpy())
    if kind in ("events", "signals"):
        return predictor.predict_proba(grid_of(paths)[rows.index.to_numpy()])
    return predictor.outputs(rows)


def score_images(predictor: Predictor, store: Path, rows: np.ndarray) -> np.ndarray:
    """Probabilities of the images at `rows` of the store, read a chunk at a time: memory does not grow with the
    split. Chunks are whole multiples of the Predictor's batch, so every batch holds the rows it would in one call."""
    images = ImageStore(store)
    order = np.argsort(rows, kind="stable")
    size = 1024 * max(1, SCORE_CHUNK_MB * 2**20 // (1024 * images.row_bytes))
    parts = [predictor.predict_proba(x) for x in rechunk(images.scan(rows[order], size), size)]
    proba = np.concatenate(parts) if parts else np.empty((0, len(predictor.classes)), dtype="float32")
    out = np.empty_like(proba)
    out[order] = proba
    return out


def patient_keys(paths: Paths, row_ids: pd.Series) -> np.ndarray | None:
    return patient_groups(manifest.lookup(paths, "patient_key", row_ids, dtype="string"))
