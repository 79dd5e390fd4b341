"""Synthetic phantoms with known masks, written under data/ offline: MONAI's create_test_image_2d/3d (discs or balls
on a noisy background) times a smooth bias field, as an MR scanner's coil leaves one. 2D cases are 8-bit PNGs; 3D
cases NIfTI files with an anisotropic spacing (1.5 x 1.5 x 2 mm), so resampling and the spacing-aware metrics have
work to do. Each synthetic patient has two studies, so the split's grouping is exercised; the last patient's
volume is held back from the manifest for `medflow predict`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# data.source name -> (dimensions, cases in the manifest, edge in voxels)
PHANTOMS = {"phantom_seg2d": (2, 48, 96), "phantom_seg3d": (3, 24, 40)}
SPACING_3D = (1.5, 1.5, 2.0)


def _bias(shape: tuple[int, ...], rng: np.random.RandomState) -> np.ndarray:
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    tilt = sum(rng.uniform(-0.3, 0.3) * a for a in axes)
    return np.exp(tilt).astype(np.float32)


def phantom(dims: int, edge: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: image float32, mask uint8 of 0 and 1."""
    from monai.data import create_test_image_2d, create_test_image_3d

    make = create_test_image_2d if dims == 2 else create_test_image_3d
    shape = (edge,) * dims
    image, mask = make(
        *shape, num_objs=4, rad_max=edge // 6, rad_min=edge // 12, noise_max=0.4, num_seg_classes=1, random_state=rng
    )
    return (image * _bias(shape, rng)).astype(np.float32), (mask > 0).astype(np.uint8)


def _write(dims: int, image: np.ndarray, mask: np.ndarray, folder: Path, stem: str) -> tuple[str, str]:
    if dims == 2:
        from PIL import Image

        scaled = np.clip(image / max(float(image.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
        # PNG rows and columns: the arrays are indexed (x, y), a picture (row = y, column = x).
        Image.fromarray(scaled.T).save(folder / f"{stem}_image.png")
        Image.fromarray(np.ascontiguousarray(mask.T)).save(folder / f"{stem}_mask.png")
        return f"cases/{stem}_image.png", f"cases/{stem}_mask.png"
    import nibabel as nib

    affine = np.diag([*SPACING_3D, 1.0])
    nib.save(nib.Nifti1Image(image, affine), folder / f"{stem}_image.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), folder / f"{stem}_mask.nii.gz")
    return f"cases/{stem}_image.nii.gz", f"cases/{stem}_mask.nii.gz"


def write_phantoms(out: Path, dims: int, cases: int, edge: int, seed: int = 0) -> Path:
    """cases pairs plus one held back under out/, and out/manifest.csv (image, mask, patient); returns the
    manifest. Written the same on every machine for a seed."""
    folder = out / "cases"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    rows = []
    for i in range(cases + 1):
        image, mask = phantom(dims, edge, rng)
        paths = _write(dims, image, mask, folder, f"case{i:03d}")
        if i < cases:
            rows.append({"image": paths[0], "mask": paths[1], "patient": f"P{i // 2:03d}"})
    manifest = out / "manifest.csv"
    tmp = manifest.with_suffix(".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(manifest)  # last: a manifest present means every case beside it is written
    return manifest


def materialise(name: str, data_dir: Path) -> Path:
    """data/<name>/manifest.csv of a built-in phantom, written once."""
    manifest = data_dir / name / "manifest.csv"
    if not manifest.exists():
        dims, cases, edge = PHANTOMS[name]
        write_phantoms(data_dir / name, dims, cases, edge)
    return manifest
