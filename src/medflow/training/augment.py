"""Mixup and cutmix, batched on the device after a batch is normalised (train.mixup, train.cutmix).

Each batch is mixed with a random permutation of itself. Training against the two label sets with the mixing weight
lam, lam * CE(y) + (1 - lam) * CE(y[perm]), equals cross-entropy with the soft target lam * onehot(y) +
(1 - lam) * onehot(y[perm]), and keeps class weights and label smoothing working as they are.
The random draws that decide lam and the cutmix box are taken on the host from a generator seeded by (seed, rank,
epoch, batch): nothing waits for the device, and a run resumed from a checkpoint draws the same as an unbroken one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Mixed:
    x: torch.Tensor
    y_other: torch.Tensor  # the labels of the rows mixed in
    lam: float  # weight of each row's own label

    def loss(self, loss_fn: Callable, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lam * loss_fn(logits, y) + (1 - self.lam) * loss_fn(logits, self.y_other)


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of about (1 - lam) of the image around a random centre, clipped to the image: (y0, y1, x0, x1)."""
    side = math.sqrt(1 - lam)
    bh, bw = int(h * side), int(w * side)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    return max(cy - bh // 2, 0), min(cy + bh - bh // 2, h), max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)


def mix(
    x: torch.Tensor,
    y: torch.Tensor,
    mixup: float,
    cutmix: float,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> Mixed:
    """x: a normalised float batch, [N, F] rows or [N, C, H, W] images (cutmix: images only; with both on, each
    batch takes one of them at random). mixup/cutmix: the alpha of Beta(alpha, alpha); gen: on x's device."""
    perm = torch.randperm(len(x), generator=gen, device=x.device)
    if cutmix > 0 and x.dim() == 4 and (mixup <= 0 or rng.random() < 0.5):
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = cutmix_box(h, w, float(rng.beta(cutmix, cutmix)), rng)
        out = x.clone()
        out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        # The weight is the area actually kept: the box may have been clipped at the border.
        return Mixed(out, y[perm], 1 - (y1 - y0) * (x1 - x0) / (h * w))
    lam = float(rng.beta(mixup, mixup))
    return Mixed(x * lam + x[perm] * (1 - lam), y[perm], lam)


def batch_rng(seed: int, rank: int, epoch: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, rank, epoch, batch])
