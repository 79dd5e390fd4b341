"""Validating an image set: one valid.parquet row per valid image, row i <-> images.npy[i]."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from medflow.data import image_validation, images
from medflow.data.columns import CONTENT_HASH, PATIENT_KEY, ROW_ID
from medflow.data.image_store import StoreWriter, return_freed_memory, rows_within
from medflow.data.suite import ValidationFailed, role_mismatches, suite_kinds
from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.keys import resolve_salt
from medflow.validation.outputs import relative, write_json
from medflow.validation.quarantine import batch_failures, held_columns, patient_key, report

log = logging.getLogger(__name__)


def validate_images(params: Params, paths: Paths) -> dict:
    """The image path of run(): one valid.parquet row per valid image, row i <-> images.npy[i]."""
    data, out = params.data, paths.step_dir("validate")
    salt = resolve_salt(params)
    dataset = images.dataset_name(data.source)
    suite_path = paths.suite(dataset)
    suite_name = relative(suite_path, paths.root)
    suite = json.loads(suite_path.read_text()) if suite_path.exists() else None
    if suite is not None:
        if suite.get("kind") != "image":
            raise ValidationFailed(f"{suite_name}: not an image suite (data.kind is image); delete it to infer one")
        mismatches = role_mismatches(suite, data)
        if mismatches:
            raise ValidationFailed(
                f"{suite_name}: column roles differ from params.data: {'; '.join(mismatches)}. Fix params or the "
                "suite's meta.medflow.columns, or delete the suite to infer it again."
            )
    required = suite["required_columns"] if suite else ()
    budget = params.train.memory_budget_mb
    if budget is not None:
        return_freed_memory()  # before the manifest is read: what Arrow allocates for it comes from the system pool
    try:
        manifest = images.open_manifest(data, paths, required) if budget is not None else None
        src = None if manifest else images.load_image_source(data, paths, required)
    except ValidationFailed as exc:
        write_json(out / "report.json", {"dataset": dataset, "source": data.source, **report([], [str(exc)])})
        raise
    created = suite is None
    if manifest:
        chunk = chunk_rows(manifest, budget)
        src, suite, digests, sums = decode_in_chunks(manifest, chunk, params, suite, dataset, out / "images.npy")
    elif created:
        suite = image_validation.infer_image_suite(src, data, params.validate_, name=dataset)

    checks, reasons = image_validation.check_images(src, data, suite)
    failures = batch_failures(checks)
    write_json(out / "report.json", {"dataset": dataset, "source": src.where, **report(checks, failures)})
    if failures:
        raise ValidationFailed(
            f"{src.where}: {len(failures)} batch-level expectation(s) failed:\n  " + "\n  ".join(failures)
        )
    if created:
        # Written only once the batch passes: a suite inferred from a broken batch would bless it.
        suite_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(suite_path, suite)
        log.info("inferred %s from %s: review it and commit it", suite_path, src.where)

    table = src.table
    bad = table[ROW_ID].isin(reasons).to_numpy()
    keep = np.flatnonzero(~bad)
    valid = table.iloc[keep].reset_index(drop=True)
    valid[data.target] = valid[data.target].astype(str)
    if manifest:
        # One per valid row, in order: the rows the checks pass are those written.
        valid[CONTENT_HASH] = image_validation.hex_column(digests)
    else:
        pixels = src.images[keep] if isinstance(src.images, np.ndarray) else np.stack([src.images[i] for i in keep])
        digests = np.array([image_validation.content_digest(im) for im in pixels], dtype="S32")
        valid[CONTENT_HASH] = image_validation.hex_column(digests)
        np.save(out / "images.npy", pixels)
        sums = image_validation.PixelSums(pixels.shape[-1])
        for i in range(0, len(pixels), 4096):
            sums.add(pixels[i : i + 4096])
    held = table[bad].copy()
    held.insert(1, "reason", [reasons[r] for r in held[ROW_ID]])
    # As for tables: the patient id leaves validate as its salted key only; identifiers not at all, nor (in
    # quarantine, where the row number finds the row) file paths, which can carry names, or other text.
    identifiers = [*data.identifiers, *([data.patient_id] if data.patient_id else [])]
    for frame in (valid, held):
        if data.patient_id:
            frame.insert(2 if "reason" in frame else 1, PATIENT_KEY, patient_key(frame[data.patient_id], salt))
        frame.drop(columns=identifiers, inplace=True)
    known = image_validation.column_kinds(table, data, params.validate_) | suite_kinds(suite)
    kinds = {c: known[c] for c in table.columns if c in known}

    valid.to_parquet(paths.valid_rows, index=False)
    held[held_columns(kinds, list(held.columns.drop("reason")))].to_csv(out / "quarantine.csv", index=False,
                                                                       lineterminator="\n")  # fmt: skip
    write_json(out / "columns.json", kinds)
    profile = image_validation.image_profile(
        valid[data.target], sums, suite["image_shape"], data.target, params.validate_
    )
    # What the table's copies, the column checks' hash tables and the writers freed goes back to the system now,
    # not held (freed but resident) through the steps that follow: at 200,000 images some 20 MB.
    pa.default_memory_pool().release_unused()
    (out / "profile").mkdir()
    (out / "profile" / "profile.md").write_text(image_validation.profile_markdown(profile, dataset))
    image_validation.save_profile_figures(profile, out / "profile")

    summary = {
        "dataset": dataset,
        "source": src.where,
        "suite": suite_name,
        "suite_created": created,
        "image_shape": suite["image_shape"],
        "rows_in": len(table),
        "rows_valid": len(valid),
        "rows_quarantined": len(held),
        "quarantine_reasons": dict(sorted((c.rule, len(c.row_ids)) for c in checks if c.row_ids)),
        "leakage_suspects": [],
    }
    if manifest:
        summary["decoded_in_chunks_of"] = chunk
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    write_json(paths.summary("validate"), summary)
    log.info("validate %s: %d images, %d valid, %d quarantined", dataset, len(table), len(valid), len(held))
    return summary


def chunk_rows(manifest: images.Manifest, budget_mb: float) -> int:
    """Manifest rows decoded at once: a quarter of the budget holds a chunk's images (as decoded, then as written),
    sized by the first readable image of the first 64 (a chunk of larger ones costs more)."""
    for i in range(min(64, len(manifest.table))):
        if (image := manifest.decode(i, i + 1).images[0]) is not None:
            return rows_within(budget_mb, image.nbytes, parts=4)
    return rows_within(budget_mb, 1, parts=4)


def decode_in_chunks(
    manifest: images.Manifest, n: int, params: Params, suite: dict | None, dataset: str, store: Path
) -> tuple[images.ImageSet, dict, np.ndarray, image_validation.PixelSums]:
    """Decodes the manifest's files n rows at a time (train.memory_budget_mb), appending each valid image to the
    store as it goes. Returns the whole set as the checks see it (each image a zero-byte stand-in of its shape),
    the suite (inferred when None: its image_shape the most common of the first chunk, as the store's shape must be
    known before the first write), each valid row's content digest (S32) and the pixel sums of the profile."""
    table, data = manifest.table, params.data
    shapes: list[np.ndarray | None] = []
    errors: dict[int, tuple[str, str]] = {}
    digests: list[np.ndarray] = []  # a fixed-width array a chunk: 32 bytes a row, not a str object of ~120
    stand_in: dict[tuple[int, ...], np.ndarray] = {}
    required = [c for c in (data.target, data.patient_id) if c]
    writer, sums = None, None
    for lo in range(0, len(table), n):
        part = manifest.decode(lo, lo + n)
        if suite is None:
            # The whole table's labels and columns, the first chunk's shapes.
            whole = images.ImageSet(table, part.images, {}, manifest.where)
            suite = image_validation.infer_image_suite(whole, data, params.validate_, name=dataset)
        if writer is None and suite["image_shape"]:
            writer = StoreWriter(store, suite["image_shape"])
            sums = image_validation.PixelSums(suite["image_shape"][-1])
        errors |= part.errors
        labelled = part.table[required].notna().all(axis=1).to_numpy()
        keep, chunk_digests = [], []
        for image, ok in zip(part.images, labelled, strict=True):
            if image is not None and image.shape not in stand_in:
                stand_in[image.shape] = np.broadcast_to(np.uint8(0), image.shape)  # one per shape: rows share it
            shapes.append(None if image is None else stand_in[image.shape])
            if image is not None and ok and list(image.shape) == suite["image_shape"]:
                chunk_digests.append(image_validation.content_digest(image))
                keep.append(image)
        if keep:
            chunk = np.stack(keep)
            writer.append(chunk)
            sums.add(chunk)
            digests.append(np.array(chunk_digests, dtype="S32"))
    if writer is None:  # not one readable image: the checks stop the run
        writer, sums = StoreWriter(store, [0, 0, 1]), image_validation.PixelSums(1)
    writer.close()
    whole = np.concatenate(digests) if digests else np.empty(0, "S32")
    return images.ImageSet(table, shapes, errors, manifest.where), suite, whole, sums
