"""The evidence the gate reads: candidate, champion and simple baselines scored on the same test patients, the
paired bootstrap of the primary metric, subgroup regressions and the leak check. Aggregates only, never rows.

Whether the candidate is comparable with the champion at all (same dataset and input schema), and whether the run
is an experiment, are read here too: the gate (gate.py) decides from these, on numbers it is handed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medflow.data.columns import ROW_ID, SPLIT
from medflow.data.features import Preprocessor, Schema, coerce_features
from medflow.data.image_store import ImageStore, rows_within
from medflow.data.manifest import load_split, outcome
from medflow.data.sources import dataset_name
from medflow.evaluation.baselines import MAX_PROBE_ROWS, TreeBaseline, image_baselines
from medflow.evaluation.heldout import patient_keys, score
from medflow.evaluation.metrics import Delta, interval, paired_delta
from medflow.evaluation.subgroups import group_labels, subgroup_report
from medflow.models.bundle import Predictor
from medflow.models.trees import TreeSettings
from medflow.params import Params
from medflow.paths import Paths
from medflow.promotion.gate import Comparison, subgroup_regressions
from medflow.promotion.leakage import leak_check
from medflow.tasks import for_params

log = logging.getLogger(__name__)


def schema_hash(schema: Schema) -> str:
    """What a caller must send and gets back: two versions with different hashes take different inputs."""
    keys = ("kind", "target", "classes", "numeric", "categorical", "image_shape")
    fields = {k: getattr(schema, k) for k in keys}
    # A survival model's outcome is its time column with its event (the target, and the word that marks it): another
    # time column is another question. Only where set, so that a classifier's hash stays what it was.
    fields |= {k: getattr(schema, k) for k in ("outcome", "time", "event_value") if getattr(schema, k) is not None}
    if schema.outcome == "classification":
        fields.pop("outcome")
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def exploratory(params: Params) -> str | None:
    # DVC sets DVC_EXP_NAME in every stage of `dvc exp run` (and not under `dvc repro`).
    if os.environ.get("DVC_EXP_NAME"):
        return "run from a DVC experiment (dvc exp run)"
    if params.register.promote == "never":
        return "register.promote is never (exploratory run)"
    return None


def mismatch(champion_tags: dict[str, str], identity: dict[str, str]) -> str | None:
    """How the candidate's inputs differ from the champion's; a champion that records none is not comparable."""
    what = {"medflow.dataset": f"dataset `{identity['medflow.dataset']}`", "medflow.schema_hash": "input schema"}
    differ = [what[k] for k, v in identity.items() if champion_tags.get(k) != v]
    if not differ:
        return None
    return " and ".join(differ) + (" differ" if len(differ) > 1 else " differs")


@dataclass(frozen=True)
class Champion:
    """The champion as the gate meets it: its model when it loaded and is comparable, else why not (note)."""

    version: str
    model: Predictor | None
    note: str | None = None


def not_rescored(version: str, exc: Exception) -> str:
    """Why the champion has no scores: the error's type only, as another library's message may quote a value."""
    return f"champion v{version} could not be re-scored ({type(exc).__name__})"


@dataclass
class TestSplit:
    """The current test split as the gate sees it: the rows evaluate scored, keyed by patient."""

    rows: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None
    train: pd.DataFrame
    val: pd.DataFrame


def test_split(paths: Paths) -> TestSplit:
    for path, step in ((paths.cleaned, "clean"), (paths.manifest, "split")):
        if not path.exists():
            raise FileNotFoundError(f"{path.relative_to(paths.root)} not found: run the {step} step first")
    df, _ = load_split(paths)
    test, train, val = (df[df[SPLIT] == s] for s in ("test", "train", "val"))
    return TestSplit(test, outcome(test), patient_keys(paths, test[ROW_ID]), train, val)


def _image_baselines(params: Params, paths: Paths, split: TestSplit, n_classes: int) -> tuple[dict, int]:
    """The image baselines and their training rows: pixels held as float32, a quarter of train.memory_budget_mb
    for the probe's training images and a quarter for each test chunk (the rest: its copies and sklearn's)."""
    store, budget = ImageStore(paths.images), params.train.memory_budget_mb
    within = rows_within(budget or 256, 4 * store.row_bytes, parts=4)
    probe = MAX_PROBE_ROWS if budget is None else min(MAX_PROBE_ROWS, within)
    train, test = (s.index.to_numpy() for s in (split.train, split.rows))
    return image_baselines(store, train, outcome(split.train), test, n_classes, params.seed, probe, within)


def _baseline_features(predictor: Predictor, paths: Paths, rows: pd.DataFrame) -> np.ndarray:
    if predictor.schema.kind in ("events", "signals"):
        # Baselines read the window aggregates (last, min, max, mean, count per variable; a signal's per-lead
        # summaries), imputed and scaled by a Preprocessor fitted on the training split here: the sequence model's
        # own preprocessing is the grid's.
        return _aggregates(predictor.schema, paths).transform(coerce_features(rows, predictor.schema))
    return predictor.preprocessor.transform(coerce_features(rows, predictor.schema))


def _aggregates(schema: Schema, paths: Paths) -> Preprocessor:
    train = test_split(paths).train
    return Preprocessor(schema.numeric, []).fit(coerce_features(train, schema))


KEY_REQUIRED = "register.gate.require_superiority_over"


def _required(name: str | None, deltas: dict[str, Delta]) -> Comparison | str | None:
    """The superiority test against the baseline a project requires the candidate to beat, or why there is none."""
    if name is None:
        return None
    if f"baseline {name}" not in deltas:
        have = ", ".join(b.removeprefix("baseline ") for b in deltas) or "none"
        return f"{KEY_REQUIRED} names {name}, not a baseline of this run (it has: {have})"
    return Comparison(f"baseline {name}", deltas[f"baseline {name}"], "superiority", 0.0, test_key=KEY_REQUIRED)


def gate_evidence(
    params: Params, paths: Paths, metrics: dict, champion: Champion | None
) -> tuple[Comparison | None, Comparison | str | None, tuple[str, ...], dict]:
    """Scores candidate, champion (when it loaded) and baselines on the same test rows; returns the paired test the
    gate reads, the required superiority over a baseline (or why it cannot be tested), the subgroups that regressed,
    and the report (aggregates only)."""
    gp, ep = params.register.gate, params.evaluate
    task = for_params(params)
    metric = ep.primary_metric
    # Every delta is an improvement, positive = better: candidate - reference, or the reverse for a metric that is
    # better lower (MAE), so the gate's one rule (the lower bound above a bound) holds in either direction.
    sign = 1.0 if task.higher_is_better(metric) else -1.0
    split = test_split(paths)
    predictor = Predictor(paths.model_bundle)
    kind = predictor.schema.kind
    cand = score(predictor, paths, split.rows, kind)
    tp = gp.tree_baseline if kind in ("tabular", "events", "signals") and len(split.val) else None
    tree = None
    if tp is not None:
        val = (_baseline_features(predictor, paths, split.val), outcome(split.val))
        tree = TreeBaseline(val, TreeSettings(**tp.model_dump(exclude={"max_rows"})), tp.max_rows)
    if kind == "image":
        baselines, probe_rows = _image_baselines(params, paths, split, len(predictor.schema.classes))
    else:
        baselines = task.baselines(
            _baseline_features(predictor, paths, split.train),
            outcome(split.train),
            _baseline_features(predictor, paths, split.rows),
            predictor.schema,
            params.seed,
            tree,
        )
    probas = {"candidate": cand} | {f"baseline {b}": proba for b, proba in baselines.items()}

    comparison, champion_proba, note = None, None, champion.note if champion else None
    if champion is not None and champion.model is not None:
        try:
            champion_proba = score(champion.model, paths, split.rows, kind)
        except Exception as exc:  # any failure leaves a person to decide; the type says which
            note = not_rescored(champion.version, exc)
            log.warning("register: %s", note)
        if champion_proba is not None:
            probas[f"champion v{champion.version}"] = champion_proba

    # Every model on the same resampled patients, drawn once: each interval and each paired difference reads
    # these draws, the very ones a bootstrap of its own with the same seed would make.
    point = {who: task.point(metric, split.y, p) for who, p in probas.items()}
    every = task.draws(split.y, list(probas.values()), split.groups, metric, gp.n_boot, params.seed)
    draws = dict(zip(probas, every, strict=True))
    models = {}
    for who, d in draws.items():
        lo, hi = interval(d)
        models[who] = {metric: point[who], "ci_low": lo, "ci_high": hi}

    def versus(ref: str) -> Delta:
        pair = np.stack([draws["candidate"], draws[ref]])
        return paired_delta(metric, [sign * point["candidate"], sign * point[ref]], sign * pair)

    # Candidate minus each baseline: the model card shows them side by side.
    deltas = {f"baseline {b}": versus(f"baseline {b}") for b in baselines}

    def margin(value: float, key: str, ref: str) -> tuple[float, str]:
        # A metric better lower is in the target's units (MAE): its margins are fractions of the reference's value.
        if sign > 0:
            return value, key
        return value * abs(point[ref]), f"{key}={value:g} of {ref}'s {metric}"

    if champion_proba is not None:
        ref = f"champion v{champion.version}"
        comparison = Comparison(
            ref, versus(ref), gp.test, *margin(gp.margin, "register.gate.margin", ref), lower_is_better=sign < 0
        )
    elif champion is None:
        best = max(baselines, key=lambda b: np.nan_to_num(sign * models[f"baseline {b}"][metric], nan=-np.inf))
        ref = f"baseline {best}"
        comparison = Comparison(
            ref,
            deltas[ref],
            "non_inferiority",
            *margin(gp.baseline_margin, "register.gate.baseline_margin", ref),
            lower_is_better=sign < 0,
        )
    required = _required(gp.require_superiority_over, deltas)

    regressions, subgroups = (), []
    threshold = metrics.get("threshold")
    if ep.subgroups:
        labels = group_labels(split.rows[predictor.schema.features], ep.subgroups, ep.subgroup_bins)
        reports = {
            who: subgroup_report(
                split.y, p, split.groups, labels, metric, ep.min_group_patients, gp.n_boot, params.seed, threshold, task
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
        # Only where lower is better, so a classifier's report reads as it always has.
        **({"lower_is_better": True} if sign < 0 else {}),
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
            "require_superiority_over": gp.require_superiority_over,
            "subgroup_tolerance": gp.subgroup_tolerance,
            "n_boot": gp.n_boot,
            "decision_threshold": threshold,
        },
        "models": models,
        # Images fit the linear probe on a seeded sample of the training split: the card says how large.
        **({"probe_train_rows": {"rows": probe_rows, "of": len(split.train)}} if kind == "image" else {}),
        "comparison": None if comparison is None else _comparison_report(comparison, metric),
        "required": _comparison_report(required, metric) if isinstance(required, Comparison) else required,
        "champion_note": note,
        "baseline_deltas": {
            who: {"delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "n_boot": d.n_boot}
            for who, d in deltas.items()
        },
        "subgroups": subgroups,
        "subgroup_regressions": list(regressions),
        "leak_check": leak_check(params, predictor, split.rows, split.y, metrics.get("test_roc_auc")),
    }
    return comparison, required, regressions, report


def run_metrics(report: dict) -> dict[str, float]:
    """Each baseline's primary metric and the candidate's paired difference from it, as MLflow run metrics."""
    metric, out = report["primary_metric"], {}
    for who, d in report.get("baseline_deltas", {}).items():
        name = who.removeprefix("baseline ")
        out[f"baseline_{name}_{metric}"] = report["models"][who][metric]
        out |= {
            f"delta_vs_{name}{suffix}": d[k]
            for k, suffix in (("delta", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high"))
        }
    return {k: v for k, v in out.items() if v == v}  # an undefined value (NaN) is left out, not logged as one


def _comparison_report(comparison: Comparison, metric: str) -> dict:
    return {
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
    }
