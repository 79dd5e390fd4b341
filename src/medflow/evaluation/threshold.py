"""The decision threshold, chosen on the validation split so that the test split only measures it."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def choose_threshold(y: np.ndarray, score: np.ndarray, method: str = "youden", target: float = 0.9) -> float:
    """youden: the threshold maximising sensitivity + specificity - 1; sensitivity: the highest threshold whose
    sensitivity reaches target. A row is called positive when its score is >= the threshold."""
    if len(np.unique(y)) < 2:
        raise ValueError("the validation split holds one class only: no threshold can be chosen on it")
    fpr, tpr, thresholds = roc_curve(y, score)
    # roc_curve's first threshold is +inf (nothing called positive): never a usable operating point.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method == "youden":
        i = int(np.argmax(tpr - fpr))
    elif method == "sensitivity":
        i = int(np.flatnonzero(tpr >= target)[0])
    else:
        raise ValueError(f"unknown threshold method {method!r}: youden or sensitivity")
    return float(thresholds[i])
