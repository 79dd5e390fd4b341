"""Where training data lives and how a batch is made of it, in the airbench style.

Data sits on the device when it fits (images as uint8 NCHW, in the memory format the model runs in: a quarter
of float32's memory) and a batch is an index gather from it. Augmentation (random flips, random translations
with zero padding) runs batched on the device, on uint8, instead of per sample in CPU workers; then the batch
becomes float and is normalised there. Data that does not fit stays in host memory and each batch is copied
through pinned memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def fits(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    # Half of what is free: weights, optimizer state and activations need the rest.
    return nbytes < free // 2


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirrors a random half of a NCHW batch left-right."""
    flip = torch.rand(len(x), generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_translate(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Shifts each NCHW image by its own random (dy, dx) in [-k, k]^2, filling with zeros: one gather."""
    n, c, h, w = x.shape
    padded = F.pad(x, (k, k, k, k)).flatten(2)  # [n, c, (h + 2k) * (w + 2k)]
    dy = torch.randint(0, 2 * k + 1, (n, 1, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * k + 1, (n, 1, 1), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx
    # gather, not x[i, :, rows, cols]: advanced indexing is ~5x slower on CPU.
    idx = (rows * (w + 2 * k) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, idx).view(n, c, h, w)


@dataclass
class Split:
    # float [N, F] rows, or uint8 images: [N, C, H, W], or [N, H, W, C] when `nhwc`. On `device`, or in host
    # memory when streaming.
    x: torch.Tensor
    y: torch.Tensor
    device: torch.device  # where batches are computed
    mean: torch.Tensor | None = None  # [1, C, 1, 1] on `device` (images only), 0-255 scale
    std: torch.Tensor | None = None
    # NHWC rows gathered and viewed as NCHW are channels_last without a copy; NCHW rows are plain NCHW.
    nhwc: bool = False

    def __len__(self) -> int:
        return len(self.y)

    def batch(
        self, idx: torch.Tensor | slice, flip: bool = False, translate: int = 0, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select copies whole rows (on CPU ~20x faster than x[idx] for images).
        if isinstance(idx, slice):
            xb, yb = self.x[idx], self.y[idx]
        else:
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        if xb.device != self.device:
            # The caching host allocator keeps each pinned block until its copy has run, so no step waits.
            xb = xb.pin_memory().to(self.device, non_blocking=True)
            yb = yb.pin_memory().to(self.device, non_blocking=True)
        if self.mean is None:
            return xb, yb
        fmt = torch.channels_last if self.nhwc else torch.contiguous_format
        if self.nhwc:
            xb = xb.permute(0, 3, 1, 2)
        if flip:
            xb = random_flip(xb, gen)
        if translate:
            xb = random_translate(xb, translate, gen)
        # Any change of layout is made on uint8, a quarter of the bytes; float() keeps the layout.
        return xb.contiguous(memory_format=fmt).float().sub_(self.mean).div_(self.std), yb
