"""register: reads artifacts/train/ (run.json, model bundle) and artifacts/evaluate/metrics.json; writes a
pyfunc model into the train run, a registry version aliased `champion` or `challenger` by the gate, and
artifacts/register/ (gate.json, gate.md, model_card.md, summary.json). Fails when an input is missing or lacks the
primary metric; a refused candidate is a normal outcome (alias `challenger`, the gate report says why).

One training run is one version: a rerun finds the run's version and reports it (finishing it first if a kill
interrupted it) without moving any alias.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from medflow import tracking
from medflow.data.features import Schema
from medflow.data.sources import dataset_name
from medflow.models.bundle import Predictor
from medflow.monitoring import reference
from medflow.params import Params
from medflow.paths import Paths
from medflow.promotion import change_control, resume
from medflow.promotion.card import card_data, gate_markdown, model_card, model_description, split_policy
from medflow.promotion.evidence import (
    Champion,
    exploratory,
    gate_evidence,
    mismatch,
    not_rescored,
    run_metrics,
    schema_hash,
)
from medflow.promotion.gate import decide
from medflow.promotion.leakage import leak_reason
from medflow.sequences.steps import card_section
from medflow.tasks import for_params
from medflow.tracking.bundles import download_bundle
from medflow.tracking.integrity import ModelFilesChanged
from medflow.tracking.pyfunc import xgboost_distribution
from medflow.tuning.tuned import study_of

log = logging.getLogger(__name__)


def _require(path: Path, paths: Paths, step: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(paths.root)} not found: run the {step} step first")
    return path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _counts(paths: Paths) -> dict[str, int]:
    """Rows in and quarantined per data step: counts only, for the card's provenance."""
    out = {}
    for step in ("validate", "clean"):
        summary = _read_json(paths.summary(step))
        for k in ("rows_in", "rows_quarantined"):
            if k in summary:
                out[f"{step}_{k}"] = summary[k]
    return out


def _environment(paths: Paths) -> dict[str, str]:
    import platform
    from importlib.metadata import version

    train = _read_json(paths.summary("train"))
    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "scikit-learn": version("scikit-learn"),
        # The trees of the gate's baseline, and of the model itself under train.model=xgboost.
        "xgboost": version(xgboost_distribution()),
        "device": str(train.get("device", "unknown")),
        "processes": str(train.get("world_size", 1)),
    }


def _declared(params: Params, dataset: str) -> dict:
    """The params' card section when it describes this dataset (card.dataset null or this one), else nothing."""
    card = params.register.card
    return card.model_dump(exclude={"dataset"}) if card.dataset in (None, dataset) else {}


def _method(params: Params, schema: Schema) -> dict[str, str]:
    """How the model was built, in words, for the card (TRIPOD+AI items 11, 12b, 12c, 13)."""
    t = params.train
    if t.model == "xgboost":
        model = f"xgboost (max_depth {t.max_depth}, learning_rate {t.learning_rate}, up to {t.n_estimators} rounds)"
    else:
        model = f"{t.model} (hidden {t.hidden}, dropout {t.dropout}, {t.optimizer} lr {t.lr})"
    out = {"model": f"{model}, stopped early on the validation loss (patience {t.patience})"}
    if schema.kind != "image":
        out["preprocessing"] = (
            "numeric features: median imputation with a missing-value indicator, standardised on the training split; "
            "categorical: one-hot, categories unseen in training refused at scoring"
        )
        out["missing_data"] = (
            "rows breaking the expectation suite quarantined with their reason (validate), never imputed; missing "
            "feature values imputed by the training median (numeric) or kept as a category"
        )
    if schema.classes:
        out["class_imbalance"] = f"class weights: {t.class_weights}" + (f"; mixup {t.mixup}" if t.mixup else "")
    if schema.classes and t.recalibrate != "none":
        out["recalibration"] = (
            f"{t.recalibrate} recalibration fitted on the validation split and bundled with the model: every metric, "
            "the gate and predict use the recalibrated probabilities"
        )
    return out


def _write(paths: Paths, card: str, summary: dict) -> dict:
    out = paths.step_dir("register")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_card.md").write_text(card)
    paths.summary("register").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(params: Params, paths: Paths) -> dict:
    if params.data.task == "segmentation":
        from medflow.segmentation import register as segmentation

        return segmentation.run(params, paths)
    run_id = json.loads(_require(paths.train_run, paths, "train").read_text())["run_id"]
    metrics = json.loads(_require(paths.metrics, paths, "evaluate").read_text())
    schema = Schema.load(_require(paths.model_bundle / "schema.json", paths, "train"))
    key = f"test_{params.evaluate.primary_metric}"
    if key not in metrics:
        raise ValueError(f"{paths.metrics.relative_to(paths.root)} has no {key}: rerun the evaluate step")
    identity = {"medflow.dataset": dataset_name(params.data.source), "medflow.schema_hash": schema_hash(schema)}

    tracking.configure(paths)
    with tracking.model_lock(params.register.model_name):
        return _register(params, paths, run_id, metrics, schema, identity)


def _champion(name: str, champion: tracking.Version | None, differs: str | None) -> Champion | None:
    """The champion's model, fetched from the registry once its files match their digest; or why the gate goes
    without its scores (its inputs differ from the candidate's, or it could not be loaded)."""
    if champion is None:
        return None
    if differs:
        return Champion(
            champion.version,
            None,
            f"champion v{champion.version} not re-scored: {differs} (its inputs no longer match)",
        )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Champion(champion.version, Predictor(download_bundle(name, champion.version, Path(tmp))))
    except ModelFilesChanged as exc:  # its message names the version and the fix, never a value
        note = f"champion v{champion.version} could not be re-scored: {exc}; {exc.medflow_fix}"
    except Exception as exc:  # any failure leaves a person to decide; the type says which
        note = not_rescored(champion.version, exc)
    log.warning("register: %s", note)
    return Champion(champion.version, None, note)


def _register(params: Params, paths: Paths, run_id: str, metrics: dict, schema: Schema, identity: dict) -> dict:
    rp = params.register
    name = rp.model_name
    key = f"test_{params.evaluate.primary_metric}"
    primary = float(metrics[key])
    dataset = identity["medflow.dataset"]
    summary = {"model_name": name, "primary_metric": key, "primary_value": primary, "run_id": run_id}
    for what in tracking.finish_interrupted(name, run_id):
        log.warning("register: %s of %s", what, name)
    earlier = tracking.versions_of_run(name, run_id)
    champion = tracking.version_by_alias(name, "champion")
    standing = resume.standing(earlier, champion, params)
    if standing.finished:
        done = standing.done
        promoted, reason = standing.past_decision
        return _write(
            paths,
            tracking.get_description(name, done.version),
            {
                **summary,
                "version": done.version,
                "promoted": promoted,
                "reason": f"run already registered as v{done.version} ({reason})",
                "champion_version": champion.version if champion else None,
            },
        )
    pending, reopen = standing.pending, standing.reopen

    lineage = tracking.lineage_of_run(run_id, params, paths)
    if standing.resumed is not None:
        decision = standing.resumed
        report = {"primary_metric": params.evaluate.primary_metric, "resumed": "the gate had decided before a kill"}
    else:
        differs = mismatch(champion.tags, identity) if champion else None
        evidence = gate_evidence(params, paths, metrics, _champion(name, champion, differs))
        comparison, required, regressions, report = evidence
        decision = decide(
            key,
            primary,
            rp.floor(dataset),
            champion.version if champion else None,
            comparison,
            sensitivity=metrics.get("test_sensitivity"),
            min_sensitivity=rp.gate.min_sensitivity,
            regressions=regressions,
            mismatch=differs,
            exploratory=exploratory(params),
            leak=leak_reason(report["leak_check"], params),
            higher_is_better=for_params(params).higher_is_better(params.evaluate.primary_metric),
            required=required,
            card_missing=tuple(k for k in rp.required_card(dataset) if not _declared(params, dataset).get(k)),
        )
    gate = resume.gate_line(decision)
    tags = {**lineage, **identity, **resume.decision_tags(decision, params, pending)}
    if reopen:
        log.warning("register: register.* changed since v%s was decided: the gate decides again", pending.version)
    if pending is None:
        model_uri = tracking.logged_model_of_run(run_id) or tracking.log_model(run_id, paths.model_bundle)
        tracking.ensure_model(
            name, model_description(schema, dataset, key), {"medflow.primary_metric": key, "medflow.task": schema.task}
        )
        version = tracking.register_version(name, model_uri, tags)
    else:
        version = pending.version
        tracking.record_creation(name, version)  # a kill may have come between the version and its record
        tracking.set_version_tags(name, version, tags)
    # Recorded again when a kill cut the registration short: a verdict twice in the trail beats one missing.
    verdict = {
        "promoted": decision.promoted,
        "reason": decision.reason,
        key: primary,
        "resumed": bool(standing.resumed),
    }
    champion_before = champion.version if champion else None
    tracking.audit.append(name, "gate.verdict", f"models:/{name}/{version}", champion_before, verdict, run_id)

    split = paths.summary("split")
    rows = json.loads(split.read_text())["rows"] if split.exists() else {"test": metrics.get("n_test")}
    report |= {
        "model_name": name,
        "version": version,
        "run_id": run_id,
        "inputs": {**identity, **{k: v for k, v in lineage.items() if k.endswith(("md5", "commit", "params_hash"))}},
        "champion_version": champion.version if champion else None,
        "decision": "promoted" if decision.promoted else "not promoted",
        "reasons": [decision.reason],
    }
    card = card_data(
        name=name,
        version=version,
        schema=schema,
        excluded=_read_json(paths.summary("validate")).get("columns", {}).get("excluded", []),
        dataset=dataset,
        rows=rows,
        metrics=metrics,
        primary_metric=key,
        decision=decision,
        lineage=lineage,
        gate=report,
        evaluation=_read_json(paths.step_dir("evaluate") / "report.json"),
        counts=_counts(paths),
        split_policy=split_policy(params, schema),
        environment=_environment(paths),
        tuning=study_of(params, paths),
        sequence=card_section(params, paths) if schema.kind == "events" else None,
        declared=_declared(params, dataset),
        split_kind={
            "patient": "internal: random split by patient",
            "time": f"temporal: latest by `{params.split.time_column}`",
            "site": f"held-out site(s) {', '.join(params.split.test_sites)}",
        }[params.split.by],
        method=_method(params, schema),
        change_plan=change_control.plan(
            params, dataset, schema.kind, not for_params(params).higher_is_better(params.evaluate.primary_metric)
        ),
    )
    card_md = model_card(card)
    out = paths.step_dir("register")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gate.md").write_text(gate_markdown(report))
    (out / "model_card.md").write_text(card_md)
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    # What `medflow monitor` compares new batches with: aggregates of this model's data, never rows.
    reference.write(reference.from_pipeline(params, paths, metrics.get("threshold")), out / "reference.json")
    for file in ("gate.json", "gate.md", "model_card.md", "model_card.json", "reference.json"):
        tracking.log_artifacts(run_id, out / file)
    if beside := run_metrics(report):
        tracking.log_metrics(run_id, beside)
    tracking.describe_version(name, version, card_md)  # before the alias: a version with an alias has its card
    before = tracking.aliases(name)
    if decision.promoted:
        tracking.set_alias(name, "champion", version)
        tracking.drop_alias(name, "challenger", version)  # a reopened decision's version may have held it
        # Appended to the registry's own record of champion moves (medflow history).
        report = str((out / "gate.json").relative_to(paths.root)) if (out / "gate.json").exists() else None
        tracking.record_move(name, champion.version if champion else None, version, "gate", decision.reason, report)
    elif not reopen:  # the latest version not promoted; a decision reopened on an older run moves nothing
        tracking.set_alias(name, "challenger", version)
    # Every version whose alias moved, this one included, gets a card that says where it stands now.
    card = tracking.refresh_cards(name, before, also=(version,)).get(version, card)
    card_md = model_card(card)
    (out / "model_card.md").write_text(card_md)
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    tracking.set_tags(run_id, {**lineage, resume.GATE: gate, "medflow.model_version": f"{name}/{version}"})
    tracking.mark_complete(name, version)  # last: only now is the version a candidate

    return _write(
        paths,
        card_md,
        {
            **summary,
            "version": version,
            "promoted": decision.promoted,
            "reason": decision.reason,
            "champion_version": version if decision.promoted else (champion.version if champion else None),
        },
    )
