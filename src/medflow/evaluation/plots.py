"""ROC and confusion-matrix figures (aggregates of the test split only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[dict]:
    """One curve for binary (positive class), one per class (one-vs-rest) for multiclass."""
    curves = (
        [(classes[1], y == 1, proba[:, 1])]
        if len(classes) == 2
        else [(c, y == i, proba[:, i]) for i, c in enumerate(classes)]
    )
    rows = []
    for name, truth, score in curves:
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = skm.roc_curve(truth, score)
        rows += [{"class": name, "fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)]
    return rows


def plot_roc(points: list[dict], out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name in dict.fromkeys(p["class"] for p in points):
        xs = [p["fpr"] for p in points if p["class"] == name]
        ys = [p["tpr"] for p in points if p["class"] == name]
        ax.plot(xs, ys, label=name)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test split)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, classes: list[str], out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
