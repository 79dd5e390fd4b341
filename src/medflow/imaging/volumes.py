"""Images and masks with their geometry: PNG/NPY (2D, 1 mm pixels), NIfTI (nibabel, its affine), DICOM series folders
and DICOM-SEG (pydicom). Every reader returns a Volume whose affine maps array indices to RAS millimetres, so that
MONAI's Orientation and Spacing can bring every case to one orientation (RAS) and one spacing.

Errors are VolumeError with a message naming the rule and counts, never a value or the file's path (the caller
names the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM's patient axes point left and posterior; RAS's right and anterior
NIFTI = (".nii", ".nii.gz")


class VolumeError(ValueError):
    pass


class SeriesGap(VolumeError):
    """A DICOM series whose slices are not evenly spaced: a missing slice would silently stretch the volume."""


@dataclass
class Volume:
    array: np.ndarray  # spatial axes only: (x, y) or (x, y, z)
    affine: np.ndarray  # 4 x 4, index -> RAS mm

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, : self.ndim] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine)[: self.ndim])


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI)


def read_volume(path: Path, where: str | None = None) -> Volume:
    """The file or DICOM series folder at path. FileNotFoundError when it is not there. where: how a series'
    errors name it (default: by its folder's name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.is_dir():
        return read_dicom_series(path, where)
    name = path.name.lower()
    if name.endswith(NIFTI):
        return _nifti(path)
    if name.endswith(".npy"):
        return _npy(path)
    if name.endswith((".png", ".tif", ".tiff", ".jpg", ".jpeg")):
        return _picture(path)
    if name.endswith(".dcm") or _is_dicom(path):
        return _dicom_file(path)
    raise VolumeError(f"{path.suffix or 'no'} extension: not a PNG, NPY, NIfTI or DICOM file")


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(132)[128:] == b"DICM"


def _planar(array: np.ndarray) -> Volume:
    # A picture's rows run down and its columns across: x indexes columns' direction as the viewer sees it.
    return Volume(np.ascontiguousarray(array.T), np.eye(4))


def _npy(path: Path) -> Volume:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise VolumeError(f"not a readable .npy array ({type(exc).__name__})") from None
    if array.ndim not in (2, 3) or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise VolumeError(f"a {array.ndim}-D {array.dtype} array: need a 2-D or 3-D numeric one")
    # A 2-D array is a picture (rows, columns); a 3-D one is already indexed x, y, z at 1 mm.
    return _planar(array) if array.ndim == 2 else Volume(array, np.eye(4))


def _picture(path: Path) -> Volume:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("1", "L", "P", "I", "I;16", "F"):
                im = im.convert("L")
            return _planar(np.asarray(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise VolumeError(f"not a readable image ({type(exc).__name__})") from None


def _nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(path)
        shape = img.shape
    except Exception as exc:  # nibabel raises several types for a damaged header or file
        raise VolumeError(f"not a readable NIfTI file ({type(exc).__name__})") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (2, 3):
        raise VolumeError(f"a {len(shape)}-D NIfTI image: need one 2-D or 3-D image per case")
    try:
        data = np.asarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise VolumeError(f"NIfTI voxels unreadable ({type(exc).__name__})") from None
    return Volume(data, np.asarray(img.affine, dtype=np.float64))


def _dcmread(path: Path, **kw):
    import pydicom

    try:
        return pydicom.dcmread(path, **kw)
    except Exception as exc:  # InvalidDicomError, EOFError, ...: the type says which
        raise VolumeError(f"not a readable DICOM file ({type(exc).__name__})") from None


def _plane_affine(orientation, spacing, origin, step) -> np.ndarray:
    """Index (column, row, slice) -> LPS mm, from ImageOrientationPatient, PixelSpacing (row, column), the first
    slice's ImagePositionPatient and the vector between slices; then RAS."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * float(spacing[1])
    affine[:3, 1] = col_dir * float(spacing[0])
    affine[:3, 2] = step
    affine[:3, 3] = np.asarray(origin, float)
    return LPS_TO_RAS @ affine


def _pixels(ds) -> np.ndarray:
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # a compressed transfer syntax without its decoder, truncated pixel data
        raise VolumeError(f"DICOM pixels unreadable ({type(exc).__name__})") from None
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return pixels * slope + intercept


def _dicom_file(path: Path) -> Volume:
    ds = _dcmread(path)
    if ds.get("Modality") == "SEG":
        return read_dicom_seg(ds)
    pixels = _pixels(ds)
    if pixels.ndim != 2:
        raise VolumeError(f"a {pixels.ndim}-D DICOM frame set: give a series folder of single-frame slices")
    if "ImageOrientationPatient" not in ds or "PixelSpacing" not in ds:
        return _planar(pixels)
    thickness = float(ds.get("SliceThickness", 1) or 1)
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    normal = np.cross(orientation[:3], orientation[3:]) * thickness
    affine = _plane_affine(orientation, ds.PixelSpacing, ds.get("ImagePositionPatient", [0, 0, 0]), normal)
    return Volume(np.ascontiguousarray(pixels.T), affine)


def _even_slices(positions: np.ndarray, where: str) -> float:
    """The spacing between slices sorted along their normal; SeriesGap when one differs from the others."""
    gaps = np.diff(positions)
    if not len(gaps):
        return 1.0
    step = float(np.median(gaps))
    uneven = np.abs(gaps - step) > max(0.01 * abs(step), 1e-3)
    if step <= 0 or uneven.any():
        raise SeriesGap(
            f"{where}: {int(uneven.sum()) or len(gaps)} of {len(gaps)} slice gaps differ from the median spacing "
            "(rule: a series' slices are evenly spaced; a missing or duplicated slice stops it)"
        )
    return step


def read_dicom_series(folder: Path, where: str | None = None) -> Volume:
    """Every DICOM file in folder, one slice each, sorted by position along the slices' normal."""
    where = where or f"DICOM series {folder.name}"
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise VolumeError(f"{where}: an empty folder (rule: a series folder holds its slices)")
    slices = [_dcmread(f) for f in files]
    orientation = [float(v) for v in slices[0].get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    if any([float(v) for v in s.get("ImageOrientationPatient", orientation)] != orientation for s in slices):
        raise VolumeError(f"{where}: slices of {len(slices)} differ in orientation (rule: one plane per series)")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [np.asarray(s.get("ImagePositionPatient", [0, 0, i]), float) for i, s in enumerate(slices)]
    along = np.array([p @ normal for p in positions])
    order = np.argsort(along, kind="stable")
    step = _even_slices(along[order], where)
    planes = [_pixels(slices[i]) for i in order]
    if len({p.shape for p in planes}) > 1:
        raise VolumeError(f"{where}: slices differ in size (rule: one matrix per series)")
    array = np.stack([p.T for p in planes], axis=-1)
    spacing = slices[0].get("PixelSpacing", [1, 1])
    return Volume(array, _plane_affine(orientation, spacing, positions[order[0]], normal * step))


def _seg_step(planes: np.ndarray, declared: float) -> float:
    """The spacing of a DICOM-SEG's slice grid. Its frames cover only the planes where a segment is set, so the
    gaps between them are whole numbers of slices: the declared spacing when every gap is a multiple of it, else
    the smallest gap when it is."""
    gaps = np.diff(planes)
    for step in (declared, float(gaps.min())):
        if step > 0 and np.allclose(gaps / step, np.rint(gaps / step), atol=0.01):
            return step
    raise VolumeError(
        f"DICOM-SEG: {len(planes)} frame planes lie on no common slice grid (rule: every gap between planes is a "
        "whole number of SpacingBetweenSlices)"
    )


def read_dicom_seg(ds) -> Volume:
    """A DICOM-SEG object as a label volume: each frame's segment number where the frame is set, its slice placed
    by its ImagePositionPatient along the normal. Planes between frames hold no segment: background."""
    try:
        frames = ds.pixel_array
        shared = ds.SharedFunctionalGroupsSequence[0]
        orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
        measures = shared.PixelMeasuresSequence[0]
        # A file cut to its first frames (as pydicom's liver_1frame.dcm) keeps every frame's functional group.
        per_frame = list(ds.PerFrameFunctionalGroupsSequence)[: int(ds.get("NumberOfFrames", 1) or 1)]
        segments = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for f in per_frame]
        positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) for f in per_frame]
    except (AttributeError, IndexError, KeyError, ValueError) as exc:
        raise VolumeError(f"DICOM-SEG without the frame geometry medflow reads ({type(exc).__name__})") from None
    frames = frames.reshape(len(per_frame), *frames.shape[-2:])
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.array([p @ normal for p in positions])
    planes = np.unique(along.round(3))
    thickness = float(measures.get("SpacingBetweenSlices", measures.get("SliceThickness", 1)) or 1)
    step = _seg_step(planes, thickness) if len(planes) > 1 else thickness
    index = np.rint((along.round(3) - planes[0]) / step).astype(int)
    labels = np.zeros((*frames.shape[-2:][::-1], int(index.max()) + 1), dtype=np.uint8)
    for frame, segment, k in zip(frames, segments, index, strict=True):
        labels[:, :, k][frame.T > 0] = segment
    first = positions[int(np.argmin(along))]
    return Volume(labels, _plane_affine(orientation, measures.PixelSpacing, first, normal * step))
