"""The on-disk image store: a .npy file of uint8 [N, H, W, C] that is written and read in chunks with plain file I/O.

Not memory-mapped: every page of a mapping that has been touched counts toward the process's resident memory for as
long as it stays mapped, so one scan of a mapped store grows the process to the store's size. A read here copies the
rows it asks for into a fresh array, and the memory goes when the array does.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

_HEADER = 128  # bytes: room for the .npy header of any N x H x W x C shape, written once N is known
_MAGIC = b"\x93NUMPY\x01\x00"


def return_freed_memory() -> None:
    """For a run over train.memory_budget_mb: memory a step frees goes back to the system instead of staying
    resident for the steps after it (bench/image_streaming.py memory, 20,000 -> 200,000 images: peak 593 -> 662 MB
    before, 526 -> 539 MB with both settings below and the digests of validate).

    Arrow's default pool (mimalloc) keeps what it frees for reuse: a manifest's table, written and checked whole,
    would leave ~40 MB at 200,000 rows behind. glibc unmaps a freed block only above a threshold that it raises to
    each large block freed (a 13 MB column sets it at 13 MB), and freed heap below it stays resident: the
    threshold is fixed at 1 MB (mallopt(3), glibc only). Only for budgeted runs: others keep the faster defaults."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):  # a C library without mallopt (musl)
            ctypes.CDLL(None).mallopt(-3, 2**20)  # M_MMAP_THRESHOLD


def rows_within(budget_mb: float, row_bytes: int, parts: int = 1) -> int:
    """How many rows of row_bytes fit in a 1/parts share of budget_mb; at least one."""
    return max(1, int(budget_mb * 2**20) // (parts * row_bytes))


class StoreWriter:
    """Appends image chunks to a .npy file whose header is written last, when the row count is known."""

    def __init__(self, path: Path, shape: list[int] | tuple[int, ...]):
        self.path, self.shape, self.rows = path, tuple(shape), 0
        self._f = path.open("wb")
        self._f.write(b"\0" * _HEADER)

    def append(self, images: np.ndarray) -> None:
        if images.shape[1:] != self.shape or images.dtype != np.uint8:
            raise ValueError(f"{self.path}: got {images.dtype} {images.shape[1:]}, the store holds uint8 {self.shape}")
        self._f.write(np.ascontiguousarray(images).data)
        self.rows += len(images)

    def close(self) -> None:
        header = repr({"descr": "|u1", "fortran_order": False, "shape": (self.rows, *self.shape)})
        # Format 1.0: magic, header length, then the dict padded with spaces and ended by a newline.
        body = header.ljust(_HEADER - len(_MAGIC) - 3) + "\n"
        self._f.seek(0)
        self._f.write(_MAGIC + struct.pack("<H", len(body)) + body.encode("latin1"))
        self._f.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageStore:
    """Reads rows of a uint8 [N, H, W, C] .npy file (written by StoreWriter or np.save) without mapping it."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise ValueError(f"{path}: not a C-ordered uint8 N x H x W x C array ({dtype}, {shape})")
        self.rows, self.shape = shape[0], tuple(shape[1:])
        self.row_bytes = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.rows

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def read(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows lo..hi-1, one contiguous read (into `out`, C-contiguous, when given)."""
        if out is None:
            out = np.empty((hi - lo, *self.shape), dtype=np.uint8)
        with self.path.open("rb", buffering=0) as f:
            f.seek(self.offset + lo * self.row_bytes)
            if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise ValueError(f"{self.path}: shorter than its header says (rows {lo}..{hi - 1})")
        return out

    def scan(self, rows: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
        """The images of `rows` (ascending store positions) in that order, at most chunk_rows of the store read at
        a time: a pass over the store, skipping the stretches that hold none of them."""
        i = 0
        while i < len(rows):
            lo = int(rows[i])
            j = int(np.searchsorted(rows, lo + chunk_rows, side="left"))
            yield self.read(lo, int(rows[j - 1]) + 1)[rows[i:j] - lo]
            i = j

    def digest(self) -> str:
        """sha256 of the file, read in chunks (a checkpoint's fingerprint of the data)."""
        h = hashlib.sha256()
        with self.path.open("rb") as f:
            while chunk := f.read(16 * 2**20):
                h.update(chunk)
        return h.hexdigest()


class StoreRows:
    """Some rows of a store as ImageNormaliser.fit and the training loop see them: a length, a shape and slices,
    each slice read from disk when asked for."""

    def __init__(self, store: ImageStore, rows: np.ndarray):
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *store.shape)
        self.nbytes = len(self.rows) * store.row_bytes

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        rows = self.rows[part]
        if not len(rows):
            return np.empty((0, *self.store.shape), dtype=np.uint8)
        return np.concatenate(list(self.store.scan(rows, int(rows[-1] - rows[0]) + 1)))


def copy_rows(source: Path, rows: np.ndarray, dest: Path, budget_mb: float) -> None:
    """The images of `rows` (ascending) of one store into a new one, half of budget_mb read at a time."""
    store = ImageStore(source)
    with StoreWriter(dest, store.shape) as out:
        for chunk in store.scan(rows, rows_within(budget_mb, store.row_bytes, parts=2)):
            out.append(chunk)


def rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The rows of `chunks`, in order, as arrays of exactly `size` rows (the last may be shorter)."""
    held: list[np.ndarray] = []
    count = 0
    for chunk in chunks:
        while len(chunk):
            part, chunk = chunk[: size - count], chunk[size - count :]
            held.append(part)
            count += len(part)
            if count == size:
                yield held[0] if len(held) == 1 else np.concatenate(held)
                held, count = [], 0
    if count:
        yield held[0] if len(held) == 1 else np.concatenate(held)
