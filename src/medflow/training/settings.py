"""How a training is set up from train.*, the same for the train step and every trial of `medflow tune`."""

from __future__ import annotations

import os

import numpy as np

from medflow.models.tabular import IMAGE_MODELS

# TrainParams settings that the loop takes as they are.
LOOP_SETTINGS = {
    "lr",
    "weight_decay",
    "batch_size",
    "max_epochs",
    "patience",
    "optimizer",
    "momentum",
    "label_smoothing",
    "augment_flip",
    "augment_translate",
    "amp",
    "channels_last",
    "compile",
    "checkpoint_every",
    "checkpoint_interval_s",
    "resume",
    "mixup",
    "cutmix",
    "memory_budget_mb",
}


def balanced_weights(y: np.ndarray, n_classes: int) -> list[float]:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return (len(y) / (n_classes * np.maximum(counts, 1))).tolist()


def cpu_threads(p, world: int) -> int:
    """train.threads, else OMP_NUM_THREADS when set, else 1 for the MLPs (a 64-row batch through 64 units is too
    little work to share: on a busy 2-core box 2 threads ran up to 10x slower) and the cores for conv nets."""
    if p.threads:
        return p.threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if p.model not in IMAGE_MODELS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // world)
