"""How well a predicted mask overlaps the reference mask, by one rule for evaluate, the gate and monitor: MONAI's
compute_dice per foreground label with ignore_empty=False, so a label neither mask holds scores 1 (the model was
right that it is absent; BraTS scores it so) and a label only the prediction holds scores 0. A case's Dice is the
mean over the foreground labels, defined for every case: two models are compared on the same cases.
"""

from __future__ import annotations

import numpy as np
import torch


def one_hot(pred: np.ndarray, truth: np.ndarray, labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both masks as MONAI's metrics take them: (1, labels, *spatial) one-hot tensors, background first."""
    from monai.networks.utils import one_hot as monai_one_hot

    index = np.searchsorted(labels, pred), np.searchsorted(labels, truth)
    p, t = (monai_one_hot(torch.from_numpy(i.astype(np.int64))[None, None], len(labels)) for i in index)
    return p, t


def label_dice(p: torch.Tensor, t: torch.Tensor) -> list[float]:
    """Dice of each foreground label of one_hot's masks."""
    from monai.metrics import compute_dice

    return [float(d) for d in compute_dice(p, t, include_background=False, ignore_empty=False)[0]]


def case_dice(pred: np.ndarray, truth: np.ndarray, labels: list[int]) -> float:
    """A case's Dice: the mean of label_dice over the foreground labels."""
    return float(np.mean(label_dice(*one_hot(pred, truth, labels))))
