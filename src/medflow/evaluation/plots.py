"""Evaluation figures: aggregates of the test split only (curves, counts, group summaries), never a row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import CalibrationDisplay


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)


def _curves(y: np.ndarray, proba: np.ndarray, classes: list[str]):
    """The positive class for binary; one-vs-rest per class for multiclass; classes absent from y are skipped."""
    pairs = (
        [(classes[1], y == 1, proba[:, 1])]
        if len(classes) == 2
        else [(c, y == i, proba[:, i]) for i, c in enumerate(classes)]
    )
    return [(name, truth, score) for name, truth, score in pairs if truth.any() and not truth.all()]


def roc_points(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[dict]:
    rows = []
    for name, truth, score in _curves(y, proba, classes):
        fpr, tpr, _ = skm.roc_curve(truth, score)
        rows += [{"class": name, "fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)]
    return rows


def plot_roc(y: np.ndarray, proba: np.ndarray, classes: list[str], out: Path, operating: tuple | None = None) -> None:
    """operating: (1 - specificity, sensitivity) at the chosen threshold, marked on the curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, truth, score in _curves(y, proba, classes):
        skm.RocCurveDisplay.from_predictions(truth, score, name=name, ax=ax, plot_chance_level=name == classes[-1])
    if operating is not None:
        ax.plot(*operating, "o", color="crimson", label="chosen threshold")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)")
    ax.set_title("ROC curve (test split)")
    _save(fig, out)


def plot_pr(y: np.ndarray, proba: np.ndarray, classes: list[str], out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, truth, score in _curves(y, proba, classes):
        skm.PrecisionRecallDisplay.from_predictions(truth, score, name=name, ax=ax, plot_chance_level=len(classes) == 2)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", ylim=(0, 1.02))
    ax.set_title("Precision-recall curve (test split)")
    _save(fig, out)


def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], out: Path, title: str) -> None:
    plt = _pyplot()
    side = 1.0 * len(classes) + 3
    fig, ax = plt.subplots(figsize=(side, side))
    skm.ConfusionMatrixDisplay.from_predictions(
        y, pred, labels=np.arange(len(classes)), display_labels=classes, ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    _save(fig, out)


def plot_reliability(conf: np.ndarray, hit: np.ndarray, out: Path, n_bins: int, label: str) -> None:
    """conf: predicted probability (binary) or top-label confidence (multiclass); hit: the outcome it predicts."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5.5))
    CalibrationDisplay.from_predictions(hit, conf, n_bins=n_bins, ax=ax, name="model")
    counts = np.bincount(np.minimum((conf * n_bins).astype(int), n_bins - 1), minlength=n_bins)
    twin = ax.twinx()
    twin.bar((np.arange(n_bins) + 0.5) / n_bins, counts, width=1 / n_bins, alpha=0.15, color="grey")
    twin.set_ylabel("rows per bin")
    ax.set(xlabel=f"mean predicted {label}", ylabel=f"observed fraction ({label})")
    ax.set_title("Reliability diagram (test split)")
    _save(fig, out)


def plot_learning_curves(history: dict[str, list[tuple[int, float]]], out: Path, best_epoch: int | None) -> None:
    """history: metric name -> (epoch, value), as train logged them: losses left, accuracies right."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, kind in zip(axes, ("loss", "accuracy"), strict=True):
        for split in ("train", "val"):
            points = history.get(f"{split}_{kind}", [])
            if points:
                ax.plot(*zip(*points, strict=True), label=split)
        if best_epoch:
            ax.axvline(best_epoch, ls="--", color="grey", lw=0.8, label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=kind, title=f"{kind} per epoch")
        ax.legend(fontsize=8)
    _save(fig, out)


def plot_forest(report: dict, out: Path, overall: float | None = None) -> None:
    """One line per group: the primary metric with its 95% CI; suppressed groups show "<k" patients and no value.

    overall: the whole test split's value, drawn as a reference line.
    """
    plt = _pyplot()
    primary, rows = report["primary_metric"], report["groups"]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        if primary in r:
            lo, hi = r[primary] - r[f"{primary}_ci_low"], r[f"{primary}_ci_high"] - r[primary]
            ax.errorbar(r[primary], i, xerr=[[lo], [hi]], fmt="o", color="navy", capsize=3)
        else:
            why = "suppressed: too few patients" if r["suppressed"] else f"{primary} undefined (one class)"
            ax.text(0.02, i, why, transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="grey")
    if overall is not None:
        ax.axvline(overall, ls="--", color="grey", lw=0.8, label=f"whole test split ({overall:.3f})")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(range(len(rows)), [f"{r['group']} ({r['patients']} patients)" for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set(xlabel=f"{primary} (95% patient-bootstrap CI)", title="Subgroups (test split)")
    _save(fig, out)
