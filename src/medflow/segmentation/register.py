"""register for segmentation: the bundle logged as the run's model and registered; the gate (promotion.gate.decide)
compares mean Dice of the candidate and the champion, re-scored on the same test cases, by the paired patient
bootstrap; with no champion, the floor register.min_primary alone decides (no baseline: an empty mask scores 0).
The model card shows the metrics with their intervals, the geometry, the worst cases and the overlays.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from medflow import tracking
from medflow.data.columns import ROW_ID
from medflow.data.features import Schema
from medflow.data.sources import dataset_name
from medflow.evaluation.metrics import paired_delta, resample_weights, resampled_means
from medflow.imaging.inference import label_volumes
from medflow.imaging.network import Segmenter
from medflow.monitoring import images
from medflow.monitoring.reference import write
from medflow.params import Params
from medflow.paths import Paths
from medflow.promotion.evidence import mismatch, schema_hash
from medflow.promotion.gate import Comparison, Decision, decide
from medflow.segmentation.cases import load_case
from medflow.segmentation.evaluate import score_cases
from medflow.segmentation.train import split_rows
from medflow.tracking.bundles import download_bundle


def paired(params: Params, paths: Paths, candidate: np.ndarray, reference: np.ndarray, groups, name: str) -> Comparison:
    """Mean Dice of both models on each of the same patient resamples; the interval of their difference."""
    rp, both = params.register.gate, np.vstack([candidate, reference])
    parts = [
        np.vstack([resampled_means(w, v) for v in both])
        for w in resample_weights(groups, len(candidate), rp.n_boot, params.seed)
    ]
    delta = paired_delta(
        "mean_dice", [float(np.nanmean(candidate)), float(np.nanmean(reference))], np.concatenate(parts, axis=1)
    )
    return Comparison(name, delta, rp.test, rp.margin)


def _champion_dice(params: Params, paths: Paths, name: str, version: str, rows: list[int]) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        table, _ = score_cases(Segmenter(download_bundle(name, version, Path(tmp))), paths, rows, params)
    return table["mean_dice"].to_numpy(dtype=float)


def monitoring_reference(params: Params, paths: Paths, window: list[float], out: Path) -> Path:
    """`medflow monitor`'s reference (monitoring/images.py) from the training split's cached cases."""
    import pandas as pd

    cases = pd.read_parquet(paths.cleaned).set_index(ROW_ID)
    if "source_spacing" not in cases.columns:
        raise ValueError("the cached cases predate monitoring's geometry columns: rerun validate (medflow run --force)")
    labels = [int(v) for v in params.data.labels]
    histograms, numbers = [], []
    for r in split_rows(paths, "train"):
        image, mask = load_case(paths, r)
        case = cases.loc[r]
        volumes = label_volumes(np.asarray(mask), list(case["spacing"]), labels)
        histograms.append(images.histogram(image, window))
        numbers.append(images.case_numbers(list(case["source_spacing"]), list(case["source_shape"]), volumes))
    reference = images.build(histograms, numbers, labels, params.monitor.bins, params.validate_.small_count)
    return write(reference, out)


def run(params: Params, paths: Paths) -> dict:
    import pandas as pd

    rp, name = params.register, params.register.model_name
    run_id = json.loads(paths.train_run.read_text())["run_id"]
    metrics = json.loads(paths.metrics.read_text())
    schema = Schema.load(paths.model_bundle / "schema.json")
    report = json.loads((paths.step_dir("evaluate") / "report.json").read_text())
    key, primary = "test_mean_dice", float(metrics["test_mean_dice"])
    identity = {"medflow.dataset": dataset_name(params.data.source), "medflow.schema_hash": schema_hash(schema)}
    tracking.configure(paths)
    with tracking.model_lock(name):
        earlier = tracking.versions_of_run(name, run_id)
        if earlier:
            done = earlier[0].version
            summary = {
                "model_name": name,
                "version": done,
                "run_id": run_id,
                "primary_metric": key,
                "primary_value": primary,
                "reason": f"run already registered as v{done}",
            }
            paths.summary("register").write_text(json.dumps(summary, indent=2) + "\n")
            return summary
        champion = tracking.version_by_alias(name, "champion")
        comparison, differs = None, None
        if champion is not None:
            differs = mismatch(champion.tags, identity)
            if not differs:
                rows = split_rows(paths, "test")
                cases = pd.read_csv(paths.step_dir("evaluate") / "cases.csv")
                manifest = pd.read_csv(paths.manifest, dtype={"patient_key": "string"}).set_index("row_id").loc[rows]
                keys = manifest["patient_key"].fillna("").astype(str).to_numpy()
                reference = _champion_dice(params, paths, name, champion.version, rows)
                comparison = paired(
                    params,
                    paths,
                    cases["mean_dice"].to_numpy(dtype=float),
                    reference,
                    keys if (keys != "").all() else None,
                    f"champion v{champion.version}",
                )
        decision: Decision = decide(
            key,
            primary,
            rp.floor(identity["medflow.dataset"]),
            champion.version if champion else None,
            comparison,
            mismatch=differs,
        )
        uri = tracking.logged_model_of_run(run_id) or tracking.log_model(run_id, paths.model_bundle)
        tracking.ensure_model(
            name,
            f"U-Net segmentation of `{identity['medflow.dataset']}` (MONAI), gated on {key}",
            {"medflow.primary_metric": key, "medflow.task": "segmentation"},
        )
        lineage = tracking.lineage_of_run(run_id, params, paths)
        gate_tag = "promoted" if decision.promoted else "not promoted"
        tags = {**lineage, **identity, "medflow.task": "segmentation", "medflow.gate": gate_tag}
        version = tracking.register_version(name, uri, tags)
        pre = json.loads((paths.model_bundle / "preprocessor.json").read_text())
        card = model_card(
            name,
            version,
            params,
            metrics,
            report,
            decision,
            pre,
        )
        out = paths.step_dir("register")
        out.mkdir(parents=True, exist_ok=True)
        gate = {
            "model_name": name,
            "version": version,
            "primary_metric": key,
            "value": primary,
            "champion_version": champion.version if champion else None,
            "promoted": decision.promoted,
            "reason": decision.reason,
        }
        if comparison is not None:
            d = comparison.delta
            gate["delta"] = {"vs": comparison.reference, "delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high}
        (out / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
        (out / "model_card.md").write_text(card)
        monitoring_reference(params, paths, pre["window"], out / "reference.json")
        for file in ("gate.json", "model_card.md", "reference.json"):
            tracking.log_artifacts(run_id, out / file)
        tracking.describe_version(name, version, card)
        verdict = {"promoted": decision.promoted, "reason": decision.reason, key: primary}
        before = champion.version if champion else None
        tracking.audit.append(name, "gate.verdict", f"models:/{name}/{version}", before, verdict, run_id)
        if decision.promoted:
            tracking.set_alias(name, "champion", version)
            tracking.record_move(name, champion.version if champion else None, version, "gate", decision.reason)
        else:
            tracking.set_alias(name, "challenger", version)
        tracking.mark_complete(name, version)
    now = version if decision.promoted else (champion.version if champion else None)
    summary = {
        "model_name": name,
        "version": version,
        "run_id": run_id,
        "primary_metric": key,
        "primary_value": primary,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_version": now,
    }
    paths.summary("register").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _ci(metrics: dict, k: str) -> str:
    lo, hi = metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")
    return f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""


def model_card(name, version, params, metrics, report, decision, pre) -> str:
    lines = [
        f"# {name} v{version}: segmentation model card",
        "",
        f"**Gate:** {'promoted to champion' if decision.promoted else 'not promoted'}: {decision.reason}",
        "",
        "## Model and data",
        "",
        f"- MONAI UNet, {len(params.data.labels)} classes (labels {list(params.data.labels)}, 0 background); "
        f"channels {list(params.train.unet_channels)}, strides {list(params.train.unet_strides)}; patches "
        f"{list(params.train.patch_size)}; Dice + cross-entropy; sliding-window inference (Gaussian blending)",
        f"- Data: `{dataset_name(params.data.source)}`; geometry: orientation {pre['orientation']}, spacing "
        f"{pre['spacing']} mm (every case resampled to it; `medflow predict` checks it again); intensity window "
        f"{[round(v, 4) for v in pre['window']]}",
        f"- Test: {report['test_rows']} cases, {report['test_patients']} patients; 95% intervals by the bootstrap "
        f"over {report['resampled']} ({report['n_boot']} resamples)",
        f"- Metrics: {report['implementation']}",
        f"- Baselines: {report['baselines']}",
        "",
        "## Test metrics",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    for k in sorted(m for m in metrics if m.startswith("test_") and not m.endswith(("_low", "_high"))):
        lines.append(f"| {k.removeprefix('test_')} | {metrics[k]:.4f} | {_ci(metrics, k)} |")
    lines += ["", "## Worst cases (salted keys)", ""]
    lines += [f"- {w['case']}: Dice {w['mean_dice']:.4f}" for w in report["worst_cases"]]
    lines += ["", "## Overlays (image, ground truth, prediction; chosen by rank of Dice)", ""]
    lines += [
        f"- {o['rank']}: {o['case']}, Dice {o['mean_dice']:.4f}: run artifact `evaluation/{o['file']}`"
        for o in report["overlays"]
    ]
    return "\n".join(lines) + "\n"
