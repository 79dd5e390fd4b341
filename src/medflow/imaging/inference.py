"""Segmenting one image as it came: read with its geometry, checked against the model's, reoriented to RAS and
resampled to the bundle's spacing as in training, segmented by sliding windows, and its mask brought back onto the
image's own grid (MONAI's ResampleToMatch, nearest neighbour) so it overlays the file it came from.

Refused, with the reason, when the file is missing or unreadable, has another number of dimensions than the model,
or a spacing more than MAX_RESAMPLING times finer or coarser than the model's on an axis (resampling that far would
invent or discard the detail it learnt on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medflow.imaging.geometry import canonical
from medflow.imaging.network import Segmenter
from medflow.imaging.volumes import Volume, VolumeError, is_nifti, read_volume
from medflow.models.bundle import BatchRejected

MAX_RESAMPLING = 2.0


def ras_geometry(volume: Volume) -> tuple[list[float], list[int]]:
    """The spacing and shape per axis once reoriented to RAS, as the model's spacing is."""
    import nibabel as nib

    order = nib.orientations.io_orientation(volume.affine)[: volume.ndim, 0].astype(int)
    spacing, shape = np.empty(volume.ndim), np.empty(volume.ndim, dtype=int)
    spacing[order], shape[order] = volume.spacing, volume.array.shape
    return spacing.tolist(), shape.tolist()


def geometry_problem(volume: Volume, spacing: list[float]) -> str | None:
    if volume.ndim != len(spacing):
        return f"dims: a {volume.ndim}-D image for a {len(spacing)}-D model"
    ras = np.asarray(ras_geometry(volume)[0])
    ratio = np.asarray(spacing) / ras
    if (ratio > MAX_RESAMPLING).any() or (ratio < 1 / MAX_RESAMPLING).any():
        return (
            f"spacing: {[round(float(s), 3) for s in ras]} mm against the model's {spacing} mm (rule: within "
            f"{MAX_RESAMPLING:g}x on every axis)"
        )
    return None


def on_input_grid(labels: np.ndarray, affine: np.ndarray, volume: Volume) -> np.ndarray:
    """The canonical prediction resampled (nearest) onto the input image's own grid and orientation."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import ResampleToMatch

    pred = MetaTensor(torch.as_tensor(labels, dtype=torch.float32)[None], affine=affine)
    target = MetaTensor(torch.zeros((1, *volume.array.shape)), affine=volume.affine)
    return np.rint(ResampleToMatch(mode="nearest")(pred, target).array[0]).astype(np.uint8)


def write_mask(mask: np.ndarray, volume: Volume, source: Path, folder: Path, row: int) -> Path:
    if is_nifti(source):
        import nibabel as nib

        out = folder / f"{row}_mask.nii.gz"
        nib.save(nib.Nifti1Image(mask, volume.affine), out)
        return out
    out = folder / f"{row}_mask.npy"
    np.save(out, mask.T if mask.ndim == 2 else mask)  # a picture's (rows, columns), as it was read
    return out


def label_volumes(mask: np.ndarray, spacing: list[float], labels: list[int]) -> dict[str, float]:
    """The volume of each foreground label of a mask with this voxel spacing (mm^3; mm^2 for a 2-D mask)."""
    voxel = float(np.prod(spacing))
    return {f"volume_{c}": float((mask == c).sum()) * voxel for c in labels[1:]}


def segment(segmenter: Segmenter, volume: Volume) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    """The mask on the input's grid, the volume of each foreground label, and the image as the model saw it (RAS, at
    the bundle's spacing), which monitoring summarises without resampling the case again."""
    image, affine = canonical(volume, segmenter.pre["spacing"], is_mask=False)
    mask = on_input_grid(segmenter.predict(image), affine, volume)
    return mask, label_volumes(mask, volume.spacing, segmenter.labels), image


def case_row(
    segmenter: Segmenter, source: Path | None, where: str | None = None
) -> tuple[dict, np.ndarray | None, Volume | None, np.ndarray | None]:
    """One input's row (label volumes, status, reason), its mask on its own grid, its Volume and the image as the
    model saw it; no mask, Volume or image when refused. where: how a DICOM series is named in the reason (default:
    by its folder's name)."""
    try:
        if source is None:
            raise VolumeError("no image path given")
        volume = read_volume(source, where)
        if why := geometry_problem(volume, segmenter.pre["spacing"]):
            raise VolumeError(why)
    except FileNotFoundError:
        return {"status": "refused", "reason": "file_missing"}, None, None, None
    except VolumeError as exc:
        return {"status": "refused", "reason": str(exc)}, None, None, None
    mask, volumes, image = segment(segmenter, volume)
    return {**volumes, "status": "ok", "reason": ""}, mask, volume, image


class CaseTable:
    """The registered pyfunc's predictor: a DataFrame of image paths (the bundle's image column) in, one row per
    path out, with the volume of each label, status and reason (the masks themselves: `medflow predict`)."""

    def __init__(self, bundle: Path):
        self.segmenter = Segmenter(bundle)

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        column = self.segmenter.pre["image_column"]
        if column not in batch.columns:
            raise BatchRejected(f"no {column!r} column (the image paths); columns: {list(batch.columns)}")
        rows = [
            {"row": i, **case_row(self.segmenter, image_path(Path("."), c))[0]} for i, c in enumerate(batch[column])
        ]
        return ordered(pd.DataFrame(rows))


def image_path(folder: Path, cell: object) -> Path | None:
    return folder / cell.strip() if isinstance(cell, str) and cell.strip() else None


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in table.columns if c not in ("status", "reason")] + ["status", "reason"]]
