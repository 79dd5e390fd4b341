"""validate, clean and split for segmentation: the manifest's image and mask pairs decoded one at a time, checked
against each other, reoriented to RAS and resampled to data.spacing, and cached as .npy files that training and
evaluation memory-map (artifacts/validate/cases/<row>_image.npy, float32, and <row>_mask.npy, uint8), so no step
holds every volume at once. A pair that cannot be used is quarantined with its rule; a DICOM series with a gap
stops the run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.columns import CONTENT_HASH, PATIENT_KEY, ROW_ID
from medflow.data.features import Schema
from medflow.data.images import _outside
from medflow.data.sources import SourceError, inside, read_table
from medflow.data.suite import ValidationFailed
from medflow.imaging import phantoms
from medflow.imaging.geometry import ORIENTATION, canonical, mismatch, onto
from medflow.imaging.inference import ras_geometry
from medflow.imaging.volumes import SeriesGap, VolumeError, read_volume
from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.keys import DEMO_SALT, pseudonymise, resolve_salt

# source_*: the geometry as read (per RAS axis), which the monitoring reference keeps aggregated.
CASE_COLUMNS = ("dims", "shape", "spacing", "foreground", "source_spacing", "source_shape")
SPLITS = ("train", "val", "test")


def cases_dir(paths: Paths) -> Path:
    return paths.step_dir("validate") / "cases"


def case_files(paths: Paths, row_id: int) -> tuple[Path, Path]:
    folder = cases_dir(paths)
    return folder / f"{row_id}_image.npy", folder / f"{row_id}_mask.npy"


def load_case(paths: Paths, row_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A cached case, memory-mapped: only the voxels a patch or window touches are read."""
    image, mask = case_files(paths, row_id)
    return np.load(image, mmap_mode="r"), np.load(mask, mmap_mode="r")


def manifest_path(params: Params, paths: Paths) -> Path:
    source = params.data.source
    if source in phantoms.PHANTOMS:
        return phantoms.materialise(source, paths.data_dir)
    path = paths.source(source)
    if not path.is_file() or path.suffix.lower() != ".csv":
        raise SourceError(f"{source}: data.task=segmentation reads a manifest .csv (image, mask, patient columns)")
    if not inside(path, paths, params.data.allowed_roots):
        raise SourceError(f"{source}: the manifest lies outside data/ and data.allowed_roots")
    return path


def salt_for(params: Params) -> str | None:
    # The phantoms' patients are synthetic: the demo salt, as for the built-in tables.
    return DEMO_SALT if params.data.patient_id and params.data.source in phantoms.PHANTOMS else resolve_salt(params)


def _read_pair(folder: Path, image: object, mask: object, roots: list[Path]):
    """(image Volume, mask Volume, None) or (None, None, (rule, detail))."""
    volumes = []
    for what, cell in (("image", image), ("mask", mask)):
        if not isinstance(cell, str) or not cell.strip():
            return None, None, ("file_missing", f"no {what} path given")
        if why := _outside(cell.strip(), folder, roots):
            return None, None, ("path_outside_data", f"{what}: {why}")
        try:
            volumes.append(read_volume(folder / cell.strip()))
        except FileNotFoundError:
            return None, None, ("file_missing", f"{what} file not found")
        except SeriesGap as exc:
            raise ValidationFailed(f"{what} {exc}") from None
        except VolumeError as exc:
            return None, None, ("decode_failed", f"{what}: {exc}")
    return volumes[0], volumes[1], None


def validate(params: Params, paths: Paths) -> dict:
    data = params.data
    source = manifest_path(params, paths)
    where = source.relative_to(paths.root).as_posix() if source.is_relative_to(paths.root) else source.name
    table = read_table(source, data.exclude, data.delimiter, data.encoding)
    required = [c for c in (data.image_column, data.mask_column, data.patient_id) if c]
    if missing := [c for c in required if c not in table.columns]:
        raise ValidationFailed(f"{where}: missing required column(s) {missing}; columns present: {list(table.columns)}")
    if data.max_rows is not None:
        table = table.iloc[: data.max_rows]
    salt = salt_for(params)
    roots = [r.resolve() for r in (paths.data_dir, *(paths.source(a) for a in data.allowed_roots))]
    out = paths.step_dir("validate")
    cases_dir(paths).mkdir(parents=True, exist_ok=True)
    spacing = list(data.spacing) if data.spacing else None
    rows, held = [], []
    for row_id, (image_cell, mask_cell) in enumerate(
        zip(table[data.image_column], table[data.mask_column], strict=True)
    ):
        image, mask, problem = _read_pair(source.parent, image_cell, mask_cell, roots)
        if problem is None:
            mask = onto(image, mask)
            problem = mismatch(image, mask, data.labels)
        if problem is None and rows and image.ndim != rows[0]["dims"]:
            problem = ("dims_mismatch", f"a {image.ndim}-D case among {rows[0]['dims']}-D ones")
        if problem:
            held.append({ROW_ID: row_id, "rule": problem[0], "reason": f"{problem[0]}: {problem[1]}"})
            continue
        pixels, _ = canonical(image, spacing, is_mask=False)
        labels, _ = canonical(mask, spacing, is_mask=True)
        spacing = spacing or [round(s, 6) for s in image.spacing]  # the first valid case's, when params give none
        files = case_files(paths, row_id)
        np.save(files[0], pixels)
        np.save(files[1], labels)
        digest = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()[:32]
        rows.append(
            {
                ROW_ID: row_id,
                CONTENT_HASH: digest,
                "dims": image.ndim,
                "shape": list(pixels.shape),
                "spacing": spacing,
                "foreground": int((labels > 0).sum()),
                **dict(zip(("source_spacing", "source_shape"), ras_geometry(image), strict=True)),
            }
        )
    valid = pd.DataFrame(rows, columns=[ROW_ID, CONTENT_HASH, *CASE_COLUMNS])
    if data.patient_id:
        keys = pseudonymise(table[data.patient_id].reset_index(drop=True), salt or "")
        valid.insert(1, PATIENT_KEY, keys.iloc[valid[ROW_ID]].to_numpy() if len(valid) else [])
    quarantine = pd.DataFrame(held, columns=[ROW_ID, "rule", "reason"])
    quarantine.to_csv(out / "quarantine.csv", index=False, lineterminator="\n")
    counts = quarantine["rule"].value_counts().to_dict()
    if len(held) > params.validate_.max_quarantine * len(table) or not len(valid):
        rules = ", ".join(f"{r} {n}" for r, n in sorted(counts.items()))
        raise ValidationFailed(
            f"{where}: {len(held)} of {len(table)} pairs quarantined ({rules}; rule: at most "
            f"validate.max_quarantine={params.validate_.max_quarantine:g} of them); see "
            "artifacts/validate/quarantine.csv"
        )
    valid.to_parquet(paths.valid_rows, index=False)
    summary = {
        "rows_in": len(table),
        "rows_valid": len(valid),
        "rows_quarantined": len(held),
        "quarantined_by_rule": counts,
        "dims": int(valid["dims"].iloc[0]),
        "spacing": spacing,
        "orientation": ORIENTATION[: int(valid["dims"].iloc[0])],
        "labels": list(data.labels),
    }
    (out / "columns.json").write_text(json.dumps({data.image_column: "image", data.mask_column: "target"}) + "\n")
    paths.summary("validate").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def schema_of(params: Params) -> Schema:
    data = params.data
    return Schema(
        target=data.mask_column,
        classes=[str(v) for v in data.labels],
        numeric=[],
        categorical=[],
        patient_id=data.patient_id,
        kind="image",
        image_shape=None,
        outcome="segmentation",
    )


def clean(params: Params, paths: Paths) -> dict:
    """The same image and mask twice (whatever rows or patients they were filed under) is one case: the later rows go
    to quarantine naming the first."""
    df = pd.read_parquet(paths.valid_rows)
    first = df.groupby(CONTENT_HASH, sort=False)[ROW_ID].transform("min")
    dup = df[ROW_ID] != first
    out = paths.step_dir("clean")
    out.mkdir(parents=True, exist_ok=True)
    held = pd.DataFrame(
        {ROW_ID: df.loc[dup, ROW_ID], "reason": [f"duplicate: the same pair as row {r}" for r in first[dup]]}
    )
    held.to_csv(out / "quarantine.csv", index=False, lineterminator="\n")
    kept = df[~dup].reset_index(drop=True)
    kept.to_parquet(paths.cleaned, index=False)
    schema_of(params).save(paths.schema)
    summary = {
        "rows_in": len(df),
        "rows_out": len(kept),
        "rows_quarantined": int(dup.sum()),
        "kind": "image",
        "task": "segmentation",
        "classes": [str(v) for v in params.data.labels],
    }
    paths.summary("clean").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def split(params: Params, paths: Paths) -> dict:
    """Whole patients to one split (a case without a patient id is its own patient)."""
    from sklearn.model_selection import train_test_split

    df = pd.read_parquet(paths.cleaned)
    keys = df[PATIENT_KEY] if PATIENT_KEY in df else pd.Series([f"row{r}" for r in df[ROW_ID]])
    groups, patients = pd.factorize(keys)
    ids = np.arange(len(patients))
    s = params.split
    rest, test = train_test_split(ids, test_size=s.test, random_state=params.seed)
    train, val = train_test_split(rest, test_size=s.val / (1 - s.test), random_state=params.seed)
    where = np.empty(len(ids), dtype=object)
    for name, part in (("train", train), ("val", val), ("test", test)):
        where[part] = name
    assigned = where[groups]
    manifest = pd.DataFrame({"row_id": df[ROW_ID], "patient_key": df.get(PATIENT_KEY, ""), "split": assigned})
    paths.step_dir("split").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(paths.manifest, index=False)
    summary = {
        "rows": {s: int((assigned == s).sum()) for s in SPLITS},
        "patients": {s: int(pd.Series(keys)[assigned == s].nunique()) for s in SPLITS},
        "manifest_sha256": hashlib.sha256(paths.manifest.read_bytes()).hexdigest(),
    }
    paths.summary("split").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
