"""Where images come from: a manifest CSV of image files, an MNIST-format idx folder, a CIFAR-10 "python version"
batch folder, or a built-in demo (digits, fashion_mnist). Every image becomes a uint8 array H x W x C
(grayscale C=1). A manifest row whose file cannot be read keeps its reason for validation to quarantine.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.columns import ROW_ID
from medflow.data.sources import SourceError, read_table
from medflow.data.suite import ValidationFailed
from medflow.params import DataParams
from medflow.paths import Paths

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ImageError(ValueError):
    """Why one image cannot be used; the message never holds its path (paths can carry patient names)."""


@dataclass
class ImageSet:
    table: pd.DataFrame  # ROW_ID, the label column, the image column (file path or "file#index"), manifest extras
    images: list[np.ndarray | None] | np.ndarray  # row i <-> table row i; None where errors holds the reason
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)  # ROW_ID -> (rule, detail) of unread images
    where: str = ""  # the source as people name it: a path relative to the project root, or a demo name


def _scrubbed(exc: Exception, path: Path) -> str:
    return str(exc).replace(str(path), "<file>")


def _pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise ImageError(f"{im.mode!r} pixels (16-bit or float) are not supported: convert to 8-bit")
            im = im.convert("L" if im.mode in ("1", "L", "LA") else "RGB")
            return np.asarray(im, dtype=np.uint8).reshape(im.height, im.width, -1)
    except UnidentifiedImageError:
        raise ImageError(f"not a readable {path.suffix.lower()} image (corrupt or another format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated: {_scrubbed(exc, path)}") from None


def _npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)  # a data file must not be able to run code
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(f"not a readable .npy array: {_scrubbed(exc, path)}") from None
    if a.dtype != np.uint8:
        raise ImageError(f"dtype {a.dtype}: only uint8 arrays are accepted (rescale to 0..255 first)")
    if a.ndim == 2:
        return a[..., None]
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        return a
    raise ImageError(f"array shape {list(a.shape)}: expected H x W or H x W x C with C in 1, 3, 4")


def _dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        a = ds.pixel_array
    except (InvalidDicomError, AttributeError, ValueError, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
        # pydicom's pixel handlers raise all of these for missing, compressed or short pixel data.
        raise ImageError(f"not a readable DICOM image: {_scrubbed(exc, path)}") from None
    if int(ds.get("NumberOfFrames") or 1) > 1:
        raise ImageError(f"multi-frame DICOM ({ds.NumberOfFrames} frames): one image per row is supported")
    if a.dtype != np.uint8:
        # 12-16 bit modalities do not fit uint8 and window tags are often absent or vendor-specific, so each image
        # is stretched over its own min..max: all contrast kept, absolute units (e.g. HU) not comparable.
        a = a.astype(np.float64)
        lo, hi = a.min(), a.max()
        a = np.zeros(a.shape, np.uint8) if hi <= lo else np.rint((a - lo) * 255 / (hi - lo)).astype(np.uint8)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        a = 255 - a  # MONOCHROME1 draws high values dark; invert so that all grayscale images agree
    return a[..., None] if a.ndim == 2 else a


def _is_dicom(path: Path) -> bool:
    # DICOM exports often have no extension; the standard puts "DICM" after a 128-byte preamble.
    with path.open("rb") as f:
        return f.read(132)[128:] == b"DICM"


def read_image(path: Path) -> np.ndarray:
    """One image file -> uint8 H x W x C, chosen by extension; ImageError says why it cannot be used."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(path)
    if suffix in PILLOW_SUFFIXES:
        return _pillow(path)
    if suffix == ".npy":
        return _npy(path)
    if suffix in DICOM_SUFFIXES or (not suffix and _is_dicom(path)):
        return _dicom(path)
    supported = ", ".join((*PILLOW_SUFFIXES, ".npy", *DICOM_SUFFIXES))
    raise ImageError(f"unsupported file type {suffix or '(none)'}; supported: {supported}")


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-format idx file, gzipped or not (told by its first bytes, not its name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise SourceError(f"{path}: not an idx file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = raw[4 + 4 * ndim :]
    if len(data) != int(np.prod(dims)) * dtype.itemsize:
        raise SourceError(f"{path}: {len(data)} data bytes, header says {list(dims)} of {dtype}")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_pairs(folder: Path) -> list[tuple[Path, Path]]:
    images = sorted(folder.glob("*images*idx3*"), key=lambda p: (not p.name.startswith("train"), p.name))
    pairs = []
    for img in images:
        lbl = folder / img.name.replace("images", "labels").replace("idx3", "idx1")
        if not lbl.exists():
            raise SourceError(f"{img}: no matching labels file {lbl.name}")
        pairs.append((img, lbl))
    return pairs


def read_idx_folder(folder: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 [N, H, W, 1], labels, "file#index" references): train files first, then test, rows in file order.

    Labels are the digits "0".."9", or the Fashion-MNIST class names when the folder's name says fashion.
    """
    names = FASHION_MNIST_CLASSES if "fashion" in folder.name.lower() else [str(i) for i in range(10)]
    images, labels, refs = [], [], []
    for img_path, lbl_path in _idx_pairs(folder):
        x, y = read_idx(img_path), read_idx(lbl_path)
        if x.ndim != 3 or x.dtype != np.uint8 or y.shape != (len(x),):
            raise SourceError(f"{img_path}: expected N x H x W uint8 images and N labels, got {x.shape}, {y.shape}")
        images.append(x[..., None])
        labels += [names[i] if 0 <= i < len(names) else str(i) for i in y.tolist()]
        refs += [f"{img_path.name}#{i}" for i in range(len(x))]
    return np.concatenate(images), labels, refs


class _ArraysOnly(pickle.Unpickler):
    # CIFAR batches are pickles, and a pickle may call anything it names: allow only numpy's array rebuilders
    # and the bytes decoder of protocol 2.
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    with path.open("rb") as f:
        return _ArraysOnly(f, encoding="bytes").load()


def read_cifar_folder(folder: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 [N, 32, 32, 3], class names, "file#index" references): data_batch_1..5, then test_batch."""
    names = [n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"]]
    batches = sorted(folder.glob("data_batch_*"), key=lambda p: p.name) + sorted(folder.glob("test_batch"))
    images, labels, refs = [], [], []
    for path in batches:
        d = _unpickle(path)
        if b"data" not in d or b"labels" not in d:
            raise SourceError(f"{path}: no b'data'/b'labels' (CIFAR-100 and other layouts are not supported)")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # stored as R, G, B planes
        labels += [names[i] for i in d[b"labels"]]
        refs += [f"{path.name}#{i}" for i in range(len(data))]
    if not images:
        raise SourceError(f"{folder}: no data_batch_* or test_batch files")
    return np.ascontiguousarray(np.concatenate(images)), labels, refs


def _digits() -> tuple[np.ndarray, list[str], list[str]]:
    from sklearn.datasets import load_digits

    ds = load_digits()
    images = np.rint(ds.images * (255 / 16)).astype(np.uint8)[..., None]  # pixel values are 0..16
    return images, [str(t) for t in ds.target], [f"digits#{i}" for i in range(len(images))]


def _fashion_mnist() -> tuple[np.ndarray, list[str], list[str]]:
    if not any(FASHION_MNIST_DIR.glob("*images*idx3*")):
        raise SourceError(
            f"{FASHION_MNIST_DIR}: Fashion-MNIST files not found; install the Debian package "
            "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
        )
    return read_idx_folder(FASHION_MNIST_DIR)


DEMOS = {"digits": _digits, "fashion_mnist": _fashion_mnist}


def dataset_name(source: str) -> str:
    return source if source in DEMOS else Path(source).stem


def _outside(cell: str, folder: Path, roots: list[Path]) -> str | None:
    """Why a manifest path may not be read, or None: a manifest must not reach files the project does not own."""
    if Path(cell).is_absolute():
        return "absolute path"
    real = (folder / cell).resolve()
    if any(real.is_relative_to(r) for r in roots):
        return None
    return "a link out of the data folder" if ".." not in Path(cell).parts else "'..' leads out of the data folder"


def _decode(cell: object, folder: Path, roots: list[Path]) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """One manifest cell -> (image, None) or (None, (rule, detail))."""
    if not isinstance(cell, str) or not cell.strip():
        return None, ("file_missing", "no path given")
    if why := _outside(cell.strip(), folder, roots):
        return None, ("path_outside_data", why)
    try:
        return read_image(folder / cell.strip()), None
    except FileNotFoundError:
        return None, ("file_missing", "")
    except ImageError as exc:
        return None, ("decode_failed", str(exc))


@dataclass
class Manifest:
    """A manifest's table, its files decoded a slice of rows at a time."""

    table: pd.DataFrame  # ROW_ID, then the manifest's columns
    folder: Path
    roots: list[Path]
    column: str
    where: str

    def decode(self, lo: int = 0, hi: int | None = None) -> ImageSet:
        """Rows lo..hi-1 as an ImageSet (its table keeps the manifest's index)."""
        part = self.table.iloc[lo:hi]
        images: list[np.ndarray | None] = []
        errors = {}
        for rid, cell in zip(part[ROW_ID].tolist(), part[self.column], strict=True):
            image, problem = _decode(cell, self.folder, self.roots)
            images.append(image)
            if problem:
                errors[rid] = problem
        return ImageSet(part, images, errors, self.where)


def _manifest(path: Path, data: DataParams, required: set[str], where: str, roots: list[Path]) -> Manifest:
    table = read_table(path, data.exclude, data.delimiter, data.encoding)
    missing = sorted(required - set(table.columns))
    if missing:
        # Checked before decoding anything, so a wrong manifest fails in a moment, not after every file is read.
        raise ValidationFailed(f"{where}: missing required column(s) {missing}; columns present: {list(table.columns)}")
    if data.max_rows is not None:
        table = table.iloc[: data.max_rows]
    table.insert(0, ROW_ID, np.arange(len(table), dtype="int64"))
    return Manifest(table.reset_index(drop=True), path.parent, roots, data.image_column, where)


def _where(path: Path, paths: Paths) -> str:
    return path.relative_to(paths.root).as_posix() if path.is_relative_to(paths.root) else str(path)


def _required(data: DataParams, required: Iterable[str]) -> set[str]:
    return {c for c in (data.image_column, data.target, data.patient_id, *data.identifiers, *required) if c}


def open_manifest(data: DataParams, paths: Paths, required: Iterable[str] = ()) -> Manifest | None:
    """data.source as a Manifest when it is a manifest .csv (nothing decoded yet), else None."""
    if data.source in DEMOS:
        return None
    path = paths.source(data.source)
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return None
    roots = [r.resolve() for r in (paths.data_dir, *(paths.source(a) for a in data.allowed_roots))]
    return _manifest(path, data, _required(data, required), _where(path, paths), roots)


def load_image_source(data: DataParams, paths: Paths, required: Iterable[str] = ()) -> ImageSet:
    """data.source (kind "image") -> ImageSet. Fails (ValidationFailed) when a manifest lacks a column named in
    params.data or in `required`; array sources (idx, CIFAR, demos) have only the label and image columns."""
    required = _required(data, required)
    if data.source in DEMOS:
        where, arrays = data.source, DEMOS[data.source]()
    else:
        if manifest := open_manifest(data, paths, required):
            return manifest.decode()
        path = paths.source(data.source)
        where = _where(path, paths)
        if (path / "batches.meta").is_file():
            arrays = read_cifar_folder(path)
        elif path.is_dir() and _idx_pairs(path):
            arrays = read_idx_folder(path)
        elif not path.exists():
            raise SourceError(
                f"{path}: image source not found (data.source={data.source!r}; demos: {', '.join(DEMOS)})"
            )
        else:
            raise SourceError(
                f"{path}: not an image source: expected a manifest .csv, an idx folder (*-images-idx3-ubyte[.gz] "
                "with *-labels-idx1-ubyte[.gz]) or a CIFAR-10 python folder (batches.meta, data_batch_*)"
            )
    images, labels, refs = arrays
    missing = sorted(required - {data.target, data.image_column})
    if missing:
        raise ValidationFailed(
            f"{where}: missing required column(s) {missing}; an array source has only the label "
            f"({data.target!r}) and image ({data.image_column!r}) columns"
        )
    n = len(images) if data.max_rows is None else min(len(images), data.max_rows)
    table = pd.DataFrame({ROW_ID: np.arange(n, dtype="int64"), data.target: labels[:n], data.image_column: refs[:n]})
    return ImageSet(table, images[:n], {}, where)
