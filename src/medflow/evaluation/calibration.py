"""Temperature scaling: one scalar T fitted on the validation split, probabilities softmax(log p / T).

It changes confidence, never the ranking (ROC-AUC and argmax stay as they are), so it is reported as a
diagnostic of how much of the calibration error one parameter removes.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

# Log of the smallest probability kept: a predicted 0 would make log p infinite.
_FLOOR = 1e-12


def scale(proba: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.log(np.clip(proba, _FLOOR, 1)) / temperature, axis=1)


def fit_temperature(y: np.ndarray, proba: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the validation negative log-likelihood."""
    logits = np.log(np.clip(proba, _FLOOR, 1))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded").x))
