"""Where training data lives and how a batch is made of it, in the airbench style.

Data sits on the device when it fits (images as uint8 NCHW, in the memory format the model runs in: a quarter
of float32's memory) and a batch is an index gather from it. Augmentation (random flips, random translations
with zero padding) runs batched on the device, on uint8, instead of per sample in CPU workers; then the batch
becomes float and is normalised there. Data that does not fit stays in host memory and each batch is copied
through pinned memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medflow.data.image_store import StoreRows


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

    def in_order(self, batch: int):
        """The rows in order, `batch` at a time, as batch() takes them."""
        return (slice(i, i + batch) for i in range(0, len(self), batch))

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
        return prepare(xb.permute(0, 3, 1, 2) if self.nhwc else xb, yb, self, flip, translate, gen)


def prepare(
    xb: torch.Tensor, yb: torch.Tensor, split, flip: bool, translate: int, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 NCHW-indexed batch on the device -> augmented, normalised float, in the split's memory format."""
    if flip:
        xb = random_flip(xb, gen)
    if translate:
        xb = random_translate(xb, translate, gen)
    # Any change of layout is made on uint8, a quarter of the bytes; float() keeps the layout.
    fmt = torch.channels_last if split.nhwc else torch.contiguous_format
    return xb.contiguous(memory_format=fmt).float().sub_(split.mean).div_(split.std), yb


@dataclass
class StreamedSplit:
    """Images read from the on-disk store (data/image_store.py) a window at a time, for data larger than
    train.memory_budget_mb: batch() takes the (images, labels) batches that epoch() and in_order() yield.

    The epoch's order is a two-level shuffle: the store is cut into blocks of consecutive rows, the blocks are
    permuted (from the seed and the epoch), consecutive runs of `window_blocks` of them are read as one window, and
    the window's rows are permuted again with the loop's order generator. Every row is seen once an epoch, and lands
    anywhere in it; rows of one block share a window, so a batch mixes rows of up to window_blocks blocks spread over
    the store rather than rows of the whole store: a store sorted by class still gives batches of many classes. With
    one window (the split fits in it) the order is exactly the in-memory loop's: one permutation of all the rows.
    A thread reads each window (one read per block, straight into the window's array) and gathers its batches (into
    pinned memory when the device is CUDA) a few batches ahead of the training: at most two windows are held at once.
    """

    rows: StoreRows  # this split's rows of the store, ascending
    y: torch.Tensor
    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    nhwc: bool
    block_rows: int  # store rows per block
    window_blocks: int

    def __len__(self) -> int:
        return len(self.y)

    def _blocks(self) -> list[np.ndarray]:
        """Positions in self.rows of the rows of each block of the store that holds any."""
        rows, store = self.rows.rows, self.rows.store
        cut = np.searchsorted(rows, np.arange(0, len(store) + self.block_rows, self.block_rows))
        return [np.arange(a, b) for a, b in zip(cut[:-1], cut[1:], strict=True) if b > a]

    def _windows(self, blocks: list[np.ndarray]):
        """(images, where each row of the split is in them, labels) of each run of window_blocks blocks: the
        stretch of each block from its first to its last row of the split, read in store order."""
        store, rows = self.rows.store, self.rows.rows
        for i in range(0, len(blocks), self.window_blocks):
            group = sorted(blocks[i : i + self.window_blocks], key=lambda b: b[0])
            spans = [(int(rows[b[0]]), int(rows[b[-1]]) + 1) for b in group]
            images = np.empty((sum(hi - lo for lo, hi in spans), *store.shape), dtype=np.uint8)
            where, at = [], 0
            for (lo, hi), b in zip(spans, group, strict=True):
                store.read(lo, hi, images[at : at + hi - lo])
                where.append(rows[b] - lo + at)
                at += hi - lo
            picked = torch.from_numpy(np.concatenate(group))
            yield torch.from_numpy(images), torch.from_numpy(np.concatenate(where)), self.y[picked]

    def epoch(self, order_gen: torch.Generator, seed: int, epoch: int, batch: int):
        blocks = self._blocks()
        block_gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        blocks = [blocks[i] for i in torch.randperm(len(blocks), generator=block_gen).tolist()]

        def shuffled():
            for x, where, y in self._windows(blocks):
                # Drawn in window order from the one generator: resumable from its checkpointed state.
                perm = torch.randperm(len(y), generator=order_gen)
                yield x, where[perm], y[perm]

        return _prefetch(self._gathered(shuffled(), batch))

    def in_order(self, batch: int):
        return _prefetch(self._gathered(self._windows(self._blocks()), batch))

    def _gathered(self, windows, batch: int):
        """(images, where, labels) windows -> (images, labels) batches of exactly `batch` rows in that order (the
        last may be shorter), gathered as the in-memory loop gathers them."""
        held, count = [], 0
        pin = self.device.type == "cuda"
        for x, where, y in windows:
            i = 0
            while i < len(y):
                take = min(batch - count, len(y) - i)
                held.append((x.index_select(0, where[i : i + take]), y[i : i + take]))
                count, i = count + take, i + take
                if count == batch:
                    yield _joined(held, pin)
                    held, count = [], 0
        if count:
            yield _joined(held, pin)

    def batch(
        self, xy: tuple[torch.Tensor, torch.Tensor], flip: bool = False, translate: int = 0, gen=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = (t.to(self.device, non_blocking=True) for t in xy)
        return prepare(xb.permute(0, 3, 1, 2), yb, self, flip, translate, gen)


def _joined(parts, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = parts[0] if len(parts) == 1 else (torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
    # Pinned, the copy to the GPU is asynchronous and needs no staging buffer.
    return (x.pin_memory(), y.pin_memory()) if pin else (x, y)


def _prefetch(items, depth: int = 4):
    """Runs the iterator `items` in a thread, up to `depth` items ahead of the consumer; its errors are raised
    here. Reading and permuting the next window releases the interpreter lock (file reads, torch copies)."""
    q: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    thread = threading.Thread(target=work, name="medflow-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.1)
