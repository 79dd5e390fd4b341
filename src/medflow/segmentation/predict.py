"""`medflow predict` for a segmentation model: a manifest of images (the training manifest's image column; paths
relative to the manifest's folder) in, one mask file per case under <output>_masks/ and one row per input row out
(imaging.inference says how each image is checked and segmented). The mask is NIfTI for NIfTI input (the image's
affine), NPY otherwise (a picture's rows and columns; a DICOM series' x, y, z).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from medflow.imaging.inference import case_row, image_path, ordered, write_mask
from medflow.imaging.network import Segmenter
from medflow.models.bundle import BatchRejected
from medflow.models.scoring import read_batch, write_atomic


def predict_file(name: str, version, input_path: Path, output_path: Path) -> dict:
    """Masks under <output>_masks/ and the table at output_path; returns counts. version: the registry's Version."""
    from medflow.tracking.bundles import download_bundle

    batch = read_batch(Path(input_path))
    with tempfile.TemporaryDirectory() as tmp:
        segmenter = Segmenter(download_bundle(name, version.version, Path(tmp)))
    column = segmenter.pre["image_column"]
    if column not in batch.columns:
        raise BatchRejected(f"{input_path}: no {column!r} column (the image paths); columns: {list(batch.columns)}")
    folder = Path(output_path).with_name(Path(output_path).stem + "_masks")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cell in enumerate(batch[column]):
        source = image_path(Path(input_path).parent, cell)
        found, mask, volume, _ = case_row(segmenter, source)
        out = None if mask is None else str(write_mask(mask, volume, source, folder, i))
        rows.append({"row": i, "model": name, "version": version.version, "mask": out, **found})
    table = ordered(pd.DataFrame(rows))
    write_atomic(table, Path(output_path))
    ok = int(table["status"].eq("ok").sum())
    return {"model": name, "version": version.version, "rows": len(table), "ok": ok, "refused": len(table) - ok}
