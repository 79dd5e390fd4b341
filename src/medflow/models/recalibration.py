"""A classifier's recalibration map, as the bundle carries it (train.recalibrate): applied to every probability the
Predictor returns. Fitted in medflow.evaluation.calibration."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

# The smallest probability kept: a predicted 0 or 1 would make its log or logit infinite.
FLOOR = 1e-12


def logit(p: np.ndarray) -> np.ndarray:
    # In float64: a network's float32 probability of exactly 1 stays 1 when clipped at 1 - 1e-12 in float32.
    p = np.clip(np.asarray(p, dtype="float64"), FLOOR, 1 - FLOOR)
    return np.log(p) - np.log1p(-p)


def scale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling: softmax(log p / T)."""
    return softmax(np.log(np.clip(proba, FLOOR, 1)) / temperature, axis=1)


def recalibrate(recalibration: dict | None, proba: np.ndarray) -> np.ndarray:
    """Probabilities through the bundle's recalibration (None: as they are)."""
    if not recalibration:
        return proba
    if recalibration["method"] == "temperature":
        return scale(proba, recalibration["temperature"]).astype(proba.dtype)
    z = recalibration["intercept"] + recalibration["slope"] * logit(proba[:, 1])
    positive = 1 / (1 + np.exp(-z))
    return np.column_stack([1 - positive, positive]).astype(proba.dtype)
