"""register: reads artifacts/train/ (run.json, model bundle) and artifacts/evaluate/metrics.json; writes a
pyfunc model into the train run, a registry version aliased `champion` or `challenger` by the gate, and
artifacts/register/ (model_card.md, summary.json). Fails when an input is missing or lacks the primary metric.
"""

from __future__ import annotations

import json
from pathlib import Path

from medflow import tracking
from medflow.data.features import Schema
from medflow.data.sources import dataset_name
from medflow.params import Params
from medflow.paths import Paths


def _require(path: Path, paths: Paths, step: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(paths.root)} not found: run the {step} step first")
    return path


def _card_metrics(metrics: dict) -> dict[str, object]:
    """Point estimates with their bootstrap interval when evaluate wrote one."""
    out: dict[str, object] = {}
    for k, v in sorted(metrics.items()):
        if k.endswith(("_ci_low", "_ci_high")) or not isinstance(v, int | float):
            continue
        lo, hi = metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")
        out[k] = f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else v
    return out


def run(params: Params, paths: Paths) -> dict:
    run_id = json.loads(_require(paths.train_run, paths, "train").read_text())["run_id"]
    metrics = json.loads(_require(paths.metrics, paths, "evaluate").read_text())
    schema = Schema.load(_require(paths.model_bundle / "schema.json", paths, "train"))
    key = f"test_{params.evaluate.primary_metric}"
    if key not in metrics:
        raise ValueError(f"{paths.metrics.relative_to(paths.root)} has no {key}: rerun the evaluate step")
    primary = float(metrics[key])
    rp = params.register
    name = rp.model_name

    tracking.configure(paths)
    lineage = tracking.lineage_of_run(run_id, params, paths)
    model_uri = tracking.log_model(run_id, paths.model_bundle)
    champion = tracking.version_by_alias(name, "champion")
    decision = tracking.decide(
        key,
        primary,
        rp.min_primary,
        rp.tolerance,
        champion.version if champion else None,
        tracking.metric_of(champion, key) if champion else None,
    )
    gate = f"{'promoted' if decision.promoted else 'not promoted'}: {decision.reason}"
    # repr() round-trips floats exactly, so an equal score read back from a tag compares equal.
    metric_tags = {k: repr(v) for k, v in metrics.items() if isinstance(v, int | float)}
    version = tracking.register_version(name, model_uri, {**lineage, **metric_tags, "medflow.gate": gate})

    split = paths.summary("split")
    rows = json.loads(split.read_text())["rows"] if split.exists() else {"test": metrics.get("n_test")}
    card = tracking.model_card(
        name=name,
        version=version,
        schema=schema,
        dataset=dataset_name(params.data.source),
        rows=rows,
        metrics=_card_metrics(metrics),
        primary_metric=key,
        decision=decision,
        lineage=lineage,
    )
    out = paths.step_dir("register")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_card.md").write_text(card)
    tracking.log_artifacts(run_id, out / "model_card.md")
    tracking.describe_version(name, version, card)
    tracking.set_alias(name, "champion" if decision.promoted else "challenger", version)
    tracking.set_tags(run_id, {**lineage, "medflow.gate": gate, "medflow.model_version": f"{name}/{version}"})

    summary = {
        "model_name": name,
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_version": version if decision.promoted else (champion.version if champion else None),
        "primary_metric": key,
        "primary_value": primary,
        "run_id": run_id,
    }
    paths.summary("register").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
