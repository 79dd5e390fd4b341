"""evaluate for segmentation: each test case predicted by sliding windows, then per case and foreground class Dice,
the 95th-percentile Hausdorff distance (mm) and the normalised surface Dice at evaluate.nsd_tolerance_mm, all MONAI's
(compute_dice, compute_hausdorff_distance, compute_surface_dice) with the voxel spacing; means with 95% intervals
from the patient bootstrap of evaluation.metrics; the per-case table; overlays of the best, median and worst case by
Dice. Cases are named by a salted key (the patient key and the case's place among that patient's), never an id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from medflow import tracking
from medflow.evaluation.metrics import interval, mean_draws
from medflow.imaging import overlap
from medflow.imaging.network import Segmenter
from medflow.params import Params
from medflow.paths import Paths
from medflow.segmentation.cases import load_case
from medflow.segmentation.train import split_rows

IMPLEMENTATION = (
    "MONAI {version}: compute_dice, compute_hausdorff_distance (percentile 95, Euclidean) and compute_surface_dice "
    "(tolerance {tol:g} mm), with the voxel spacing {spacing} mm"
)


def case_metrics(pred: np.ndarray, truth: np.ndarray, labels: list[int], spacing: list[float], tol: float) -> dict:
    """Dice (imaging.overlap's rule), HD95 (mm) and NSD of each foreground label of one case; the distances NaN
    where a label is absent from either mask (they are undefined)."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    p, t = overlap.one_hot(pred, truth, labels)
    dice = overlap.label_dice(p, t)
    hd = compute_hausdorff_distance(p, t, include_background=False, percentile=95, spacing=spacing)[0]
    nsd = compute_surface_dice(p, t, [tol] * (len(labels) - 1), include_background=False, spacing=spacing)[0]
    out = {}
    for i, label in enumerate(labels[1:]):
        present = bool(t[0, i + 1].any()) and bool(p[0, i + 1].any())
        out[f"dice_{label}"] = dice[i]
        out[f"hd95_{label}"] = float(hd[i]) if present else math.nan
        out[f"nsd_{label}"] = float(nsd[i]) if present else math.nan
    return out


def case_keys(manifest: pd.DataFrame) -> list[str]:
    """A case's name in reports: its salted patient key's first 10 characters and its place among that patient's
    cases; without patient ids, the case's row in the manifest (a position, no value)."""
    keys = manifest["patient_key"].fillna("").astype(str)
    if not keys.str.len().any():
        return [f"row{r}" for r in manifest["row_id"]]
    rank = manifest.groupby(keys).cumcount()
    return [f"{k[:10]}#{n}" for k, n in zip(keys, rank, strict=True)]


def score_cases(segmenter: Segmenter, paths: Paths, rows: list[int], params: Params) -> tuple[pd.DataFrame, dict]:
    """The per-case table of a model on the given cases, and the predictions of each (row -> mask)."""
    labels = [int(v) for v in params.data.labels]
    spacing = json.loads(paths.summary("validate").read_text())["spacing"]
    table, preds = [], {}
    for r in rows:
        image, truth = load_case(paths, r)
        pred = segmenter.predict(image)
        preds[r] = pred
        m = case_metrics(pred, np.asarray(truth), labels, spacing, params.evaluate.nsd_tolerance_mm)
        table.append({"row_id": r, **m, "mean_dice": float(np.mean([m[f"dice_{c}"] for c in labels[1:]]))})
    return pd.DataFrame(table), preds


def _slice(image: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if image.ndim == 2:
        return image, truth
    z = int(np.argmax((truth > 0).sum(axis=(0, 1)))) if truth.any() else image.shape[2] // 2
    return image[:, :, z], truth[:, :, z]


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str, out: Path) -> None:
    """Image, truth and prediction side by side (the slice with the most truth for a volume)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, t = _slice(np.asarray(image), np.asarray(truth))
    _, p = _slice(np.asarray(image), pred)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for ax, (name, mask) in zip(axes, (("image", None), ("ground truth", t), ("prediction", p)), strict=True):
        ax.imshow(img.T, cmap="gray", origin="lower")
        if mask is not None:
            ax.imshow(
                np.ma.masked_equal(mask.T, 0), cmap="autumn", alpha=0.5, origin="lower", vmin=0, vmax=mask.max() or 1
            )
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def run(params: Params, paths: Paths) -> dict:
    ep = params.evaluate
    rows = split_rows(paths, "test")
    if not rows:
        raise ValueError(f"{paths.manifest}: the test split is empty; enlarge the data or split.test")
    manifest = pd.read_csv(paths.manifest, dtype={"patient_key": "string"}).set_index("row_id").loc[rows].reset_index()
    validated = json.loads(paths.summary("validate").read_text())
    segmenter = Segmenter(paths.model_bundle)
    table, preds = score_cases(segmenter, paths, rows, params)
    table.insert(0, "case", case_keys(manifest))
    groups = manifest["patient_key"].fillna("").astype(str).to_numpy()
    groups = groups if (groups != "").all() else None
    labels = [int(v) for v in params.data.labels][1:]
    metrics: dict[str, float] = {}
    for name in ["mean_dice", *(f"{m}_{c}" for c in labels for m in ("dice", "hd95", "nsd"))]:
        values = table[name].to_numpy(dtype=float)
        if np.isnan(values).all():
            continue
        lo, hi = interval(mean_draws(values, groups, ep.n_boot, params.seed))
        metrics |= {f"test_{name}": float(np.nanmean(values)), f"test_{name}_ci_low": lo, f"test_{name}_ci_high": hi}
    metrics = {k: round(v, 6) for k, v in metrics.items() if math.isfinite(v)}
    metrics |= {"n_test": len(rows), "n_test_patients": len(set(groups)) if groups is not None else len(rows)}

    out = paths.step_dir("evaluate")
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    ranked = table.sort_values(["mean_dice", "case"], ascending=[False, True]).reset_index(drop=True)
    chosen = {"best": 0, "median": len(ranked) // 2, "worst": len(ranked) - 1}
    overlays = []
    for rank, at in chosen.items():
        case = ranked.iloc[at]
        image, truth = load_case(paths, int(case["row_id"]))
        file = plots / f"overlay_{rank}.png"
        title = f"{rank} test case by Dice ({case['case']}): Dice {case['mean_dice']:.3f}"
        overlay(image, truth, preds[int(case["row_id"])], title, file)
        overlays.append(
            {
                "rank": rank,
                "case": case["case"],
                "mean_dice": round(float(case["mean_dice"]), 4),
                "file": f"plots/{file.name}",
            }
        )
    from importlib.metadata import version

    spacing = validated["spacing"]
    report = {
        "task": "segmentation",
        "test_rows": len(rows),
        "test_patients": metrics["n_test_patients"],
        "resampled": "patients" if groups is not None else "cases (no patient id)",
        "n_boot": ep.n_boot,
        "spacing_mm": spacing,
        "orientation": validated["orientation"],
        "nsd_tolerance_mm": ep.nsd_tolerance_mm,
        "implementation": IMPLEMENTATION.format(version=version("monai"), tol=ep.nsd_tolerance_mm, spacing=spacing),
        "baselines": "none: a segmentation has no trivial baseline worth a gate (an empty mask scores Dice 0)",
        "overlays": overlays,
        "worst_cases": ranked.tail(3).iloc[::-1][["case", "mean_dice"]].round(4).to_dict("records"),
        "cases": table.drop(columns="row_id").round(4).replace({np.nan: None}).to_dict("records"),
    }
    table.drop(columns="row_id").to_csv(out / "cases.csv", index=False, lineterminator="\n")
    (out / "roc.json").write_text("[]\n")  # dvc.yaml's ROC plot tracks this file for every task
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_md(report, metrics))
    paths.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    run_id = json.loads(paths.train_run.read_text())["run_id"]
    tracking.configure(paths)
    tracking.log_metrics(run_id, metrics)
    for file in ("report.json", "report.md", "cases.csv"):
        tracking.log_artifacts(run_id, out / file, "evaluation")
    tracking.log_artifacts(run_id, plots, "evaluation/plots")
    return metrics


def report_md(report: dict, metrics: dict) -> str:
    lines = [
        "# Evaluation (test split, segmentation)",
        "",
        f"{report['test_rows']} cases, {report['test_patients']} patients; intervals: 95% percentile bootstrap over "
        f"{report['resampled']} ({report['n_boot']} resamples). Geometry: {report['orientation']}, spacing "
        f"{report['spacing_mm']} mm. Metrics: {report['implementation']}. Dice and NSD: higher is better; HD95 (mm): "
        "lower is better.",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    for k in sorted(m for m in metrics if m.startswith("test_") and not m.endswith(("_low", "_high"))):
        lo, hi = metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")
        ci = f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
        lines.append(f"| {k.removeprefix('test_')} | {metrics[k]:.4f} | {ci} |")
    lines += ["", "Overlays (image, ground truth, prediction), chosen by rank of Dice:", ""]
    lines += [f"- {o['rank']}: {o['case']}, Dice {o['mean_dice']:.4f} ({o['file']})" for o in report["overlays"]]
    lines += ["", "Worst cases: " + ", ".join(f"{w['case']} ({w['mean_dice']:.4f})" for w in report["worst_cases"])]
    lines += ["", f"Baselines: {report['baselines']}."]
    return "\n".join(lines) + "\n"
