"""register: reads artifacts/train/ (run.json, model bundle) and artifacts/evaluate/metrics.json; writes a
pyfunc model into the train run, a registry version aliased `champion` or `challenger` by the gate, and
artifacts/register/ (gate.json, gate.md, model_card.md, summary.json). Fails when an input is missing or lacks the
primary metric; a refused candidate is a normal outcome (alias `challenger`, the gate report says why).

One training run is one version: a rerun finds the run's version and reports it (finishing it first if a kill
interrupted it) without moving any alias.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medflow import tracking
from medflow.data.columns import LABEL, ROW_ID, SPLIT
from medflow.data.features import Schema, coerce_features
from medflow.data.manifest import load_split
from medflow.data.sources import dataset_name
from medflow.evaluation.baselines import baseline_proba, flat_pixels
from medflow.evaluation.heldout import patient_keys, score
from medflow.evaluation.metrics import Delta, bootstrap_draws, interval, paired_delta, weighted_metric
from medflow.evaluation.subgroups import group_labels, subgroup_report
from medflow.models.bundle import Predictor
from medflow.monitoring import reference
from medflow.params import Params, yaml_list
from medflow.paths import Paths
from medflow.tracking.bundles import download_bundle
from medflow.tracking.card import card_data, gate_markdown, model_card
from medflow.tracking.gate import Comparison, subgroup_regressions
from medflow.tracking.integrity import ModelFilesChanged
from medflow.tuning.tuned import study_of

log = logging.getLogger(__name__)


def _require(path: Path, paths: Paths, step: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(paths.root)} not found: run the {step} step first")
    return path


def schema_hash(schema: Schema) -> str:
    """What a caller must send and gets back: two versions with different hashes take different inputs."""
    keys = ("kind", "target", "classes", "numeric", "categorical", "image_shape")
    text = json.dumps({k: getattr(schema, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


GATE_PARAMS = "medflow.gate_params"  # hash of the register.* the version's last gate decision read
DECISIONS = "medflow.gate."  # + n: every gate decision on the version, oldest first ("medflow.gate": the last)


def gate_params(params: Params) -> str:
    """What the gate read besides the model and its test split: a change reopens a registered run's decision."""
    text = json.dumps(params.register.model_dump(mode="json", exclude={"model_name"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def exploratory(params: Params) -> str | None:
    # DVC sets DVC_EXP_NAME in every stage of `dvc exp run` (and not under `dvc repro`).
    if os.environ.get("DVC_EXP_NAME"):
        return "run from a DVC experiment (dvc exp run)"
    if params.register.promote == "never":
        return "register.promote is never (exploratory run)"
    return None


def mismatch(champion: tracking.Version, identity: dict[str, str]) -> str | None:
    """How the candidate's inputs differ from the champion's; a champion that records none is not comparable."""
    what = {"medflow.dataset": f"dataset `{identity['medflow.dataset']}`", "medflow.schema_hash": "input schema"}
    differ = [what[k] for k, v in identity.items() if champion.tags.get(k) != v]
    if not differ:
        return None
    return " and ".join(differ) + (" differ" if len(differ) > 1 else " differs")


def model_description(schema: Schema, dataset: str, metric: str) -> str:
    return (
        f"{schema.task.capitalize()} classification of `{schema.target}` ({', '.join(schema.classes)}), trained "
        f"by medflow on `{dataset}`. Alias `champion` is the version in use, `challenger` the latest one that was "
        f"not promoted; each version's description is its model card and its tags hold lineage and the gate "
        f"decision on `{metric}`. Load with `mlflow.pyfunc.load_model('models:/<name>@champion')`."
    )


@dataclass
class TestSplit:
    """The current test split as the gate sees it: the rows evaluate scored, keyed by patient."""

    rows: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None
    train: pd.DataFrame


def test_split(paths: Paths) -> TestSplit:
    for path, step in ((paths.cleaned, "clean"), (paths.manifest, "split")):
        _require(path, paths, step)
    df, _ = load_split(paths)
    test, train = df[df[SPLIT] == "test"], df[df[SPLIT] == "train"]
    return TestSplit(test, test[LABEL].to_numpy(), patient_keys(paths, test[ROW_ID]), train)


def _baseline_features(predictor: Predictor, paths: Paths, rows: pd.DataFrame) -> np.ndarray:
    if predictor.schema.kind == "image":
        return flat_pixels(np.load(paths.images, mmap_mode="r")[rows.index.to_numpy()])
    return predictor.preprocessor.transform(coerce_features(rows, predictor.schema))


# Test rows the leakage check shuffles each feature of: its ROC-AUC changes are stable long before 150k rows.
LEAK_ROWS = 20_000


def leak_check(params: Params, predictor: Predictor, split: TestSplit, roc_auc: float | None) -> dict | None:
    """What shuffling each feature on the test split costs a near-perfect tabular model's ROC-AUC, and the features
    whose loss reaches register.gate.leak_drop (aggregates only); None for image models and models below
    validate.leakage_auc."""
    vp, gp = params.validate_, params.register.gate
    if predictor.schema.kind == "image" or roc_auc is None or roc_auc < vp.leakage_auc:
        return None
    rng = np.random.default_rng(params.seed)
    take = np.sort(rng.permutation(len(split.y))[:LEAK_ROWS])
    rows, y, one = split.rows.iloc[take], split.y[take], np.ones((1, len(take)))
    base = float(weighted_metric("roc_auc", y, predictor.predict_proba(rows), one)[0])
    shuffle = rng.permutation(len(take))
    drops = {}
    for feature in predictor.schema.features:
        shuffled = rows.assign(**{feature: rows[feature].to_numpy()[shuffle]})
        lost = base - float(weighted_metric("roc_auc", y, predictor.predict_proba(shuffled), one)[0])
        drops[feature] = round(lost, 4)
    ranked = sorted(drops, key=drops.get, reverse=True)
    carried = [f for f in ranked if drops[f] >= gp.leak_drop]
    return {
        "roc_auc": roc_auc,
        "rows_shuffled": len(take),
        "drops": {f: drops[f] for f in ranked[: max(5, len(carried))]},
        "suspects": [f for f in carried if f not in vp.accept_leakage],
        "accepted": [f for f in carried if f in vp.accept_leakage],
    }


def leak_reason(check: dict | None, params: Params) -> str | None:
    """Why a near-perfect model does not promote, with the -P that fixes it; None when nothing is suspected."""
    if not check or not check["suspects"]:
        return None
    suspects, data, vp = check["suspects"], params.data, params.validate_
    costs = ", ".join(f"{f} {check['drops'][f]:.3f}" for f in suspects)
    return (
        f"suspected target leakage: test roc_auc={check['roc_auc']:.4f} rests on {len(suspects)} feature(s), each of "
        f"which costs it this much when shuffled: {costs} (register.gate.leak_drop="
        f"{params.register.gate.leak_drop:g}). If they are recorded after the outcome, drop them "
        f"(-P 'data.exclude={yaml_list([*data.exclude, *suspects])}'); if they are legitimate predictors, accept them "
        f"(-P 'validate.accept_leakage={yaml_list([*vp.accept_leakage, *suspects])}')"
    )


def gate_evidence(
    params: Params, paths: Paths, metrics: dict, champion: tracking.Version | None, differs: str | None
) -> tuple[Comparison | None, tuple[str, ...], dict]:
    """Scores candidate, champion (when comparable) and baselines on the same test rows; returns the paired test the
    gate reads, the subgroups that regressed, and the report (aggregates only)."""
    gp, ep = params.register.gate, params.evaluate
    metric = ep.primary_metric
    split = test_split(paths)
    predictor = Predictor(paths.model_bundle)
    kind = predictor.schema.kind
    cand = score(predictor, paths, split.rows, kind)
    n_classes = len(predictor.classes)
    baselines = baseline_proba(
        _baseline_features(predictor, paths, split.train),
        split.train[LABEL].to_numpy(),
        _baseline_features(predictor, paths, split.rows),
        n_classes,
        params.seed,
    )
    probas = {"candidate": cand} | {f"baseline {b}": proba for b, proba in baselines.items()}

    comparison, champion_proba, note = None, None, None
    if champion is not None and differs:
        note = f"champion v{champion.version} not re-scored: {differs} (its inputs no longer match)"
    elif champion is not None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                bundle = download_bundle(params.register.model_name, champion.version, Path(tmp))
                champion_proba = score(Predictor(bundle), paths, split.rows, kind)
        except ModelFilesChanged as exc:  # its message names the version and the fix, never a value
            note = f"champion v{champion.version} could not be re-scored: {exc}; {exc.medflow_fix}"
            log.warning("register: %s", note)
        except Exception as exc:  # any failure leaves a person to decide; the type says which
            note = f"champion v{champion.version} could not be re-scored ({type(exc).__name__})"
            log.warning("register: %s", note)
        if champion_proba is not None:
            probas[f"champion v{champion.version}"] = champion_proba

    # Every model on the same resampled patients, drawn once: each interval and each paired difference reads
    # these draws, the very ones a bootstrap of its own with the same seed would make.
    one = np.ones((1, len(split.y)))
    point = {who: float(weighted_metric(metric, split.y, p, one)[0]) for who, p in probas.items()}
    every = bootstrap_draws(split.y, list(probas.values()), split.groups, metric, gp.n_boot, params.seed)
    draws = dict(zip(probas, every, strict=True))
    models = {}
    for who, d in draws.items():
        lo, hi = interval(d)
        models[who] = {metric: point[who], "ci_low": lo, "ci_high": hi}

    def versus(ref: str) -> Delta:
        return paired_delta(metric, [point["candidate"], point[ref]], np.stack([draws["candidate"], draws[ref]]))

    # Candidate minus each baseline: the model card shows them side by side.
    deltas = {f"baseline {b}": versus(f"baseline {b}") for b in baselines}
    if champion_proba is not None:
        ref = f"champion v{champion.version}"
        comparison = Comparison(ref, versus(ref), gp.test, gp.margin)
    elif champion is None:
        best = max(baselines, key=lambda b: np.nan_to_num(models[f"baseline {b}"][metric], nan=-np.inf))
        comparison = Comparison(
            f"baseline {best}",
            deltas[f"baseline {best}"],
            "non_inferiority",
            gp.baseline_margin,
            "register.gate.baseline_margin",
        )

    regressions, subgroups = (), []
    threshold = metrics.get("threshold")
    if ep.subgroups:
        labels = group_labels(split.rows[predictor.schema.features], ep.subgroups, ep.subgroup_bins)
        reports = {
            who: subgroup_report(
                split.y, p, split.groups, labels, metric, ep.min_group_patients, gp.n_boot, params.seed, threshold
            )
            for who, p in (("candidate", cand), ("champion", champion_proba))
            if p is not None
        }
        ref_groups = {r["group"]: r for r in reports["champion"]["groups"]} if "champion" in reports else {}
        for r in reports["candidate"]["groups"]:
            other = ref_groups.get(r["group"], {})
            row = {"group": r["group"], "patients": r["patients"]}
            subgroups.append(row | {"candidate": r.get(metric), "champion": other.get(metric)})
        if "champion" in reports:
            regressions = subgroup_regressions(reports["candidate"], reports["champion"], gp.subgroup_tolerance)

    report = {
        "primary_metric": metric,
        "test": {
            "rows": len(split.y),
            "patients": len(np.unique(split.groups)) if split.groups is not None else len(split.y),
            "resampled": "patients" if split.groups is not None else "rows (no patient id)",
        },
        "thresholds": {
            "min_primary": params.register.floor(dataset_name(params.data.source)),
            "min_sensitivity": gp.min_sensitivity,
            "test": gp.test,
            "margin": gp.margin,
            "baseline_margin": gp.baseline_margin,
            "subgroup_tolerance": gp.subgroup_tolerance,
            "n_boot": gp.n_boot,
            "decision_threshold": threshold,
        },
        "models": models,
        "comparison": None
        if comparison is None
        else {
            "reference": comparison.reference,
            "metric": metric,
            "test": comparison.test,
            "margin": comparison.margin,
            "delta": comparison.delta.delta,
            "ci_low": comparison.delta.ci_low,
            "ci_high": comparison.delta.ci_high,
            "n_boot": comparison.delta.n_boot,
            "bound": comparison.bound,
            "passed": comparison.passed,
        },
        "champion_note": note,
        "baseline_deltas": {
            who: {"delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "n_boot": d.n_boot}
            for who, d in deltas.items()
        },
        "subgroups": subgroups,
        "subgroup_regressions": list(regressions),
        "leak_check": leak_check(params, predictor, split, metrics.get("test_roc_auc")),
    }
    return comparison, regressions, report


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


def _split_policy(params: Params, schema: Schema) -> str:
    unit = "patient (all of a patient's rows in one split)" if schema.patient_id else "row (no patient id)"
    return (
        f"by {unit}, identical feature rows kept together; validation {params.split.val:.0%}, "
        f"test {params.split.test:.0%}, seed {params.seed}. The threshold is chosen on validation, every metric "
        "is measured on test."
    )


def _environment(paths: Paths) -> dict[str, str]:
    import platform
    from importlib.metadata import version

    train = _read_json(paths.summary("train"))
    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "scikit-learn": version("scikit-learn"),
        "device": str(train.get("device", "unknown")),
        "processes": str(train.get("world_size", 1)),
    }


def _write(paths: Paths, card: str, summary: dict) -> dict:
    out = paths.step_dir("register")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_card.md").write_text(card)
    paths.summary("register").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(params: Params, paths: Paths) -> dict:
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
    done = next((v for v in earlier if v.complete), None)
    champion = tracking.version_by_alias(name, "champion")
    # A version decided under other register.* (a floor changed) is decided again; the champion stays as it is.
    reopen = done is not None and done.tags.get(GATE_PARAMS, gate_params(params)) != gate_params(params)
    if done is not None and (not reopen or (champion is not None and champion.version == done.version)):
        gate = done.tags.get("medflow.gate", "")
        promoted, _, reason = gate.partition(": ")
        card = tracking.get_description(name, done.version)
        return _write(
            paths,
            card,
            {
                **summary,
                "version": done.version,
                "promoted": promoted == "promoted",
                "reason": f"run already registered as v{done.version} ({reason})",
                "champion_version": champion.version if champion else None,
            },
        )
    # A registration of this run that a kill interrupted, or the one whose decision is reopened.
    pending = done or (earlier[-1] if earlier else None)

    lineage = tracking.lineage_of_run(run_id, params, paths)
    if pending is not None and champion is not None and champion.version == pending.version:
        # Killed after its alias moved: the gate had promoted it, and nothing since has replaced it.
        decision = tracking.Decision(True, pending.tags.get("medflow.gate", "").partition(": ")[2])
        report = {"primary_metric": params.evaluate.primary_metric, "resumed": "the gate had decided before a kill"}
    else:
        differs = mismatch(champion, identity) if champion else None
        comparison, regressions, report = gate_evidence(params, paths, metrics, champion, differs)
        decision = tracking.decide(
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
        )
    gate = f"{'promoted' if decision.promoted else 'not promoted'}: {decision.reason}"
    tags = {**lineage, **identity, "medflow.gate": gate, GATE_PARAMS: gate_params(params)}
    if reopen:
        log.warning("register: register.* changed since v%s was decided: the gate decides again", pending.version)
    past = {k: v for k, v in (pending.tags if pending else {}).items() if k.startswith(DECISIONS)}
    if not past or past.get(f"{DECISIONS}{len(past)}") != gate:  # a resumed registration decided once
        tags[f"{DECISIONS}{len(past) + 1}"] = gate
    if pending is None:
        model_uri = tracking.logged_model_of_run(run_id) or tracking.log_model(run_id, paths.model_bundle)
        tracking.ensure_model(
            name, model_description(schema, dataset, key), {"medflow.primary_metric": key, "medflow.task": schema.task}
        )
        version = tracking.register_version(name, model_uri, tags)
    else:
        version = pending.version
        tracking.set_version_tags(name, version, tags)

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
        split_policy=_split_policy(params, schema),
        environment=_environment(paths),
        tuning=study_of(params, paths),
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
    tracking.set_tags(run_id, {**lineage, "medflow.gate": gate, "medflow.model_version": f"{name}/{version}"})
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
