"""Monitoring a segmentation model: a batch manifest of images against the training reference `register` wrote
(reference.json, as for tables), from aggregates on both sides.

Per case: the histogram of its windowed intensities on fixed bins, its spacing and shape per RAS axis as read, and
the volume of each foreground label (mm^3; mm^2 in 2D): the training cases' masks, the batch's predictions. The
reference keeps the summed histogram and, per number, quantile bins merged until each holds validate.small_count
cases (drift.py's statistics); never a voxel, a path or a patient id.

The histogram is of the windowed values (0..1, the model's input) rather than raw intensities: its bins are then
the same for every dataset and disclose nothing of it, and an intensity shift or rescaling the window cannot absorb
shows where it harms the model, piled up in the two outer bins (clipped at 0 or 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.imaging import overlap
from medflow.imaging.geometry import windowed
from medflow.imaging.inference import case_row, image_path, ras_geometry
from medflow.imaging.network import Segmenter
from medflow.imaging.volumes import VolumeError, read_volume
from medflow.monitoring import drift
from medflow.monitoring.drift import cell
from medflow.monitoring.reference import bin_counts, numeric_reference

VERSION = 1
# Inner edges: bin 0 holds what the window clipped to 0, the last what it clipped to 1, ten equal bins between.
INTENSITY_EDGES = [0.0, *(np.arange(1, 10) / 10).tolist(), float(np.nextafter(np.float32(1), np.float32(0)))]
AXES = "xyz"


def case_numbers(spacing: list[float], shape: list[int], volumes: dict[str, float]) -> dict[str, float]:
    named = {f"spacing_{AXES[i]}": float(s) for i, s in enumerate(spacing)}
    return named | {f"shape_{AXES[i]}": float(n) for i, n in enumerate(shape)} | volumes


def histogram(image: np.ndarray, window: list[float]) -> list[int]:
    return bin_counts(windowed(np.asarray(image), window).ravel().astype(np.float64), INTENSITY_EDGES)


def build(histograms: list[list[int]], numbers: list[dict[str, float]], labels: list[int], bins: int, k: int):
    """The reference of the training cases' summaries (one histogram and one dict of numbers per case)."""
    table = pd.DataFrame(numbers)
    return {
        "version": VERSION,
        "task": "segmentation",
        "what": "aggregates of the training split's cases (canonical grid, masks); no voxels, paths or ids",
        "small_count": k,
        "train_cases": len(numbers),
        "labels": labels,
        "intensity": {"edges": INTENSITY_EDGES, "counts": np.sum(histograms, axis=0).tolist(), "cases": len(numbers)},
        "features": {c: numeric_reference(table[c].to_numpy(dtype="float64"), bins, k, outer=True) for c in table},
    }


def intensity_drift(ref: dict, counts: list[int], cases: int, mp) -> dict:
    """PSI of the pooled voxel histograms; its KS test counts cases, not voxels: the voxels of one image are no
    independent draws, and a voxel count would make any shift significant."""
    r, c = np.asarray(ref["counts"], float), np.asarray(counts, float)
    if not cases or not c.sum():
        return {"kind": "histogram", "psi": None, "ks": None, "ks_pvalue": None, "drifted": False, "counts": counts}
    d, p = drift.binned_ks((r / r.sum() * ref["cases"]).tolist(), (c / c.sum() * cases).tolist())
    value = drift.psi(r, c)
    drifted = bool(value >= mp.psi_threshold and p < mp.ks_pvalue)
    return {"kind": "histogram", "psi": value, "ks": d, "ks_pvalue": p, "drifted": drifted, "counts": counts}


def performance(dices: list[float], params) -> dict | None:
    """Mean Dice (imaging.overlap's rule, as evaluate's) with its 95% bootstrap interval over cases (a batch
    manifest names no patients)."""
    from medflow.evaluation.metrics import interval, mean_draws

    if not dices:
        return None
    d = np.asarray(dices)
    lo, hi = interval(mean_draws(d, None, params.evaluate.n_boot, params.seed))
    return {
        "metric": "mean_dice",
        "value": float(d.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "labelled_rows": len(d),
        "resampled": "cases",
    }


def _truth(folder, cell, volume) -> np.ndarray | None:
    """The batch's mask for a case, when it has one on the image's grid."""
    source = image_path(folder, cell)
    try:
        mask = read_volume(source) if source else None
    except (FileNotFoundError, VolumeError):
        return None
    return mask.array if mask is not None and mask.array.shape == volume.array.shape else None


def check(batch: pd.DataFrame, folder, reference: dict, segmenter: Segmenter, params) -> dict:
    """Segments each case the batch manifest lists (paths relative to folder) and compares the batch with the
    reference. A case predict would refuse is counted with its reason and the batch goes on."""
    mp, labels, column = params.monitor, segmenter.labels, segmenter.pre["image_column"]
    if column not in batch.columns:
        raise ValueError(f"no {column!r} column (the image paths); columns: {list(batch.columns)}")
    masks = batch[params.data.mask_column] if params.data.mask_column in batch.columns else None
    pooled, numbers, refused, dices, unlabelled = np.zeros(len(INTENSITY_EDGES) + 1, int), [], [], [], 0
    for i, path in enumerate(batch[column]):
        # The reasons reach the Prefect artifact and the MLflow run: a series is not named by its folder, often a
        # patient's or a study's id (the row number says which case).
        found, mask, volume, seen = case_row(segmenter, image_path(folder, path), "DICOM series")
        if mask is None:
            refused.append({"row": i, "reason": found["reason"]})
            continue
        # On the model's grid, as the reference's cases were cached.
        pooled += histogram(seen, segmenter.pre["window"])
        spacing, shape = ras_geometry(volume)
        numbers.append(case_numbers(spacing, shape, {k: v for k, v in found.items() if k.startswith("volume_")}))
        truth = None if masks is None else _truth(folder, masks.iloc[i], volume)
        if truth is not None:
            dices.append(overlap.case_dice(mask, truth, labels))
        elif masks is not None:
            unlabelled += 1
    table = pd.DataFrame(numbers, columns=list(reference["features"]))
    features = {"intensity": intensity_drift(reference["intensity"], pooled.tolist(), len(numbers), mp)}
    for name, ref in reference["features"].items():
        features[name] = drift.numeric_drift(ref, table[name].to_numpy(dtype="float64"), mp)
    drifted = [c for c, f in features.items() if f["drifted"]]
    perf = performance(dices, params)
    report = {
        "task": "segmentation",
        "rows": int(len(batch)),
        "refused_rows": len(refused),
        "refused": refused,
        "features": features,
        "performance": perf,
        "unscored_masks": unlabelled,  # missing, unreadable or off the image's grid
        "thresholds": mp.model_dump(),
        "drifted_features": drifted,
        # Retraining adds a labelled batch to data.source (monitoring/batch.py), a table of rows; an image batch
        # would need its files copied under data/ and its manifest merged: reported, never done here.
        "retrain_because": [],
    }
    scored = len(numbers)
    if scored < mp.min_rows:
        report["status"] = f"too few cases ({scored} scored < monitor.min_rows={mp.min_rows}): not judged"
    elif len(drifted) >= mp.min_drifted_features:
        report["status"] = f"drift: {len(drifted)} feature(s) drifted ({', '.join(drifted)})"
        report["update"] = {
            "summary": "drift found; not retrained: medflow monitor does not add image batches to the training data "
            "(docs/segmentation.md)"
        }
    else:
        report["status"] = "ok: no drift beyond the thresholds"
    return report


def markdown(report: dict) -> str:
    m = report["model"]
    lines = [
        f"# Drift report: {m['name']} v{m['version']} (segmentation)",
        "",
        f"Batch `{report['batch']}`: {report['rows']} cases ({report['refused_rows']} refused by predict's checks), "
        f"checked {report['checked_at']}.",
        "",
        f"**Status: {report['status']}**",
        "",
        "| feature | PSI | KS D | KS p-value | drifted |",
        "|---|---|---|---|---|",
    ]
    for name, f in report["features"].items():
        lines.append(
            f"| {name} | {cell(f['psi'])} | {cell(f['ks'])} | {cell(f['ks_pvalue'], '.2g')} | "
            f"{'yes' if f['drifted'] else ''} |"
        )
    if report["refused"]:
        lines += ["", "Refused cases (manifest row: reason):", ""]
        lines += [f"- {r['row']}: {r['reason']}" for r in report["refused"]]
    perf = report.get("performance")
    if perf:
        lines += [
            "",
            f"Cases with a mask: {perf['labelled_rows']}; mean Dice {perf['value']:.3f} (95% CI "
            f"{cell(perf['ci_low'])}-{cell(perf['ci_high'])}, resampling cases).",
        ]
    if report.get("update"):
        lines += ["", f"Update: {report['update']['summary']}"]
    lines += [
        "",
        "intensity: the pooled histogram of windowed intensities (PSI; KS counting cases); spacing and shape per RAS "
        "axis as read; volume_<label>: the predicted volume (mm^3, mm^2 in 2D) against the training masks'. A "
        "feature drifted when PSI reaches monitor.psi_threshold and its KS p-value is below monitor.ks_pvalue.",
    ]
    return "\n".join(lines) + "\n"
