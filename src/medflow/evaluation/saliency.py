"""Saliency maps of an image classifier on a few test images: where Captum's IntegratedGradients finds the pixels
that moved the predicted class's logit away from a plain baseline image.

Unlike every other evaluation figure, these show test images themselves (the issue asks for cases in the card), so
they stay few (evaluate.saliency_cases, 0 turns them off) and are picked by rank of the model's confidence, never by
patient or file; their names and titles carry the rank and the classes only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medflow.evaluation.plots import _pyplot, _save
from medflow.models.bundle import Predictor

STEPS = 32  # IntegratedGradients' Riemann steps: tens of forward and backward passes per image, cheap on CPU
INTERNAL_BATCH = 8  # interpolated images per forward pass: memory bounded whatever the image size
METHOD = (
    f"Captum IntegratedGradients on the predicted class's logit (baseline: the training split's per-channel mean "
    f"image, all zeros once normalised; {STEPS} steps)"
)
KINDS = ("most confident correct", "most confident wrong", "least confident")


def pick(y: np.ndarray, pred: np.ndarray, confidence: np.ndarray, k: int) -> list[tuple[int, str]]:
    """Up to k (test position, kind) pairs, taking the kinds of KINDS in turn, each its next-ranked unused row; a
    kind with no row left (no wrong prediction) is skipped. Ties go to the earlier row (a stable sort)."""
    by_confidence = np.argsort(-confidence, kind="stable")
    queues = [
        [i for i in by_confidence if y[i] == pred[i]],
        [i for i in by_confidence if y[i] != pred[i]],
        list(by_confidence[::-1]),
    ]
    chosen: list[tuple[int, str]] = []
    used: set[int] = set()
    while len(chosen) < k and any(queues):
        for queue, kind in zip(queues, KINDS, strict=True):
            while queue and queue[0] in used:
                queue.pop(0)
            if queue and len(chosen) < k:
                used.add(queue[0])
                chosen.append((int(queue.pop(0)), kind))
    return chosen


def attributions(predictor: Predictor, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[N, H, W] |attribution| summed over channels, for raw uint8 images [N, H, W, C] and each one's class."""
    import torch
    from captum.attr import IntegratedGradients

    mean = torch.tensor(predictor.preprocessor.mean).view(1, -1, 1, 1)
    std = torch.tensor(predictor.preprocessor.std).view(1, -1, 1, 1)
    x = (torch.from_numpy(np.ascontiguousarray(images)).float().permute(0, 3, 1, 2) - mean) / std
    ig = IntegratedGradients(predictor.model)
    out = ig.attribute(
        x,
        baselines=torch.zeros_like(x),
        target=torch.from_numpy(np.asarray(targets, dtype=np.int64)),
        n_steps=STEPS,
        internal_batch_size=INTERNAL_BATCH,
    )
    return out.detach().abs().sum(dim=1).numpy()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-") or "class"


def file_name(rank: int, kind: str, true: str, predicted: str) -> str:
    return f"saliency_{rank}_{kind.replace(' ', '_')}_true-{_slug(true)}_pred-{_slug(predicted)}.png"


def plot_case(image: np.ndarray, heat: np.ndarray, out: Path, title: str) -> None:
    """The image beside it in grey with the heat map (scaled to its own maximum) laid over it."""
    plt = _pyplot()
    gray = image[..., 0] if image.shape[-1] == 1 else image.mean(axis=-1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 3.4))
    left.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    left.set_title("image")
    right.imshow(gray, cmap="gray", vmin=0, vmax=255)
    peak = float(heat.max())
    shown = right.imshow(heat / peak if peak > 0 else heat, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    right.set_title("|attribution| / its maximum, overlaid")
    fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    for ax in (left, right):
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    _save(fig, out)


def draw(predictor: Predictor, images: np.ndarray, y, pred, confidence, cases: list[tuple[int, str]], plots) -> dict:
    """One PNG per case under plots; images: the cases' raw images, in the order of cases; y, pred, confidence: the
    test split's classes, predictions and confidence in them. Returned for the report: the method and, per case, its
    rank, kind, classes, confidence and file name."""
    classes = predictor.classes
    positions = np.asarray([i for i, _ in cases], dtype=np.int64)
    heat = attributions(predictor, images, pred[positions])
    rows = []
    for rank, ((i, kind), image, h) in enumerate(zip(cases, images, heat, strict=True), start=1):
        true, predicted = classes[int(y[i])], classes[int(pred[i])]
        name = file_name(rank, kind, true, predicted)
        plot_case(image, h, Path(plots) / name, f"#{rank} {kind}: true {true}, predicted {predicted}")
        rows.append(
            {"rank": rank, "kind": kind, "true": true, "predicted": predicted,
             "confidence": round(float(confidence[i]), 4), "file": name}
        )  # fmt: skip
    return {"method": METHOD, "cases": rows}
