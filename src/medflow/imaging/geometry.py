"""One orientation (RAS) and one voxel spacing for every case, by MONAI's Orientation and Spacing transforms; the
checks that an image and its mask share a grid; the intensity window."""

from __future__ import annotations

import numpy as np

from medflow.imaging.volumes import Volume

ORIENTATION = "RAS"
# Spacings closer than this (relative) are one spacing: headers round them differently.
SPACING_RTOL = 1e-3
AXES = (("L", "R"), ("P", "A"), ("I", "S"))  # what RAS means, named so MONAI reads no other convention


def onto(image: Volume, mask: Volume) -> Volume:
    """mask on image's grid when it covers only some of image's slices, as a DICOM-SEG does (frames only where a
    segment is set): the same in-plane grid, orientation and slice spacing, shifted by a whole number of slices,
    background elsewhere. Any other mask as it is, for mismatch to name."""
    shape, covered = image.array.shape, mask.array.shape
    if image.ndim != 3 or mask.ndim != 3 or covered == shape or covered[:2] != shape[:2]:
        return mask
    shift = np.linalg.inv(image.affine) @ mask.affine  # mask index -> image index
    first = int(np.rint(shift[2, 3]))
    aligned = np.allclose(shift[:3, :3], np.eye(3), atol=SPACING_RTOL) and np.allclose(
        shift[:3, 3], [0, 0, first], atol=0.01
    )
    if not aligned or first < 0 or first + covered[2] > shape[2]:
        return mask
    placed = np.zeros(shape, dtype=mask.array.dtype)
    placed[:, :, first : first + covered[2]] = mask.array
    return Volume(placed, image.affine.copy())


def mismatch(image: Volume, mask: Volume, labels: list[int]) -> tuple[str, str] | None:
    """(rule, detail) of why mask cannot label image, or None. The detail holds shapes, spacings, codes and counts of
    the geometry, never an intensity."""
    if image.array.shape != mask.array.shape:
        return "shape_mismatch", f"image {list(image.array.shape)}, mask {list(mask.array.shape)}"
    if not np.allclose(image.spacing, mask.spacing, rtol=SPACING_RTOL):
        spacings = [round(s, 4) for s in image.spacing], [round(s, 4) for s in mask.spacing]
        return "spacing_mismatch", f"image {spacings[0]} mm, mask {spacings[1]} mm"
    if image.orientation != mask.orientation:
        return "orientation_mismatch", f"image {image.orientation}, mask {mask.orientation}"
    values = np.unique(mask.array)
    if not np.all(np.isin(values, labels)) or not np.allclose(values, np.round(values)):
        outside = int((~np.isin(values, labels)).sum())
        return "labels_outside", f"{outside} label value(s) outside data.labels {labels}"
    return None


def canonical(volume: Volume, spacing: list[float] | None, is_mask: bool) -> tuple[np.ndarray, np.ndarray]:
    """The volume reoriented to RAS and resampled to spacing (None: kept), linear for images and nearest for
    masks; returns (array, affine)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    t = MetaTensor(torch.as_tensor(np.asarray(volume.array, dtype=np.float32))[None], affine=volume.affine)
    t = Orientation(axcodes=ORIENTATION[: volume.ndim], labels=AXES)(t)
    if spacing is not None and not np.allclose(volume.spacing, spacing, rtol=SPACING_RTOL):
        t = Spacing(pixdim=list(spacing), mode="nearest" if is_mask else "bilinear")(t)
    array = t.array[0]
    return (np.rint(array).astype(np.uint8) if is_mask else array.astype(np.float32)), np.asarray(t.affine)


def fit_window(samples: list[np.ndarray]) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the training cases' intensities: robust to a few hot voxels."""
    values = np.concatenate([s.ravel() for s in samples])
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1)


def windowed(array: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return ((np.clip(array, low, high) - low) / (high - low)).astype(np.float32)
