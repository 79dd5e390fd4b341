"""evaluate: reads the model bundle, artifacts/clean/cleaned.parquet and the split manifest; writes
artifacts/evaluate/ (metrics.json with patient-bootstrap 95% CIs, roc.json, report.json, report.md, plots/*.png) and
logs test_* metrics, the plots and the report to the training run. Fails when the test split is empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from medflow import tracking
from medflow.data.columns import LABEL, ROW_ID, SPLIT, TIME
from medflow.data.manifest import load_split
from medflow.evaluation import characteristics, decision_curve, permutation, regression, survival
from medflow.evaluation.calibration import fit_temperature, logistic_calibration, smoothed_curve
from medflow.evaluation.heldout import patient_keys, score
from medflow.evaluation.metrics import bootstrap_ci, point_metrics, weighted_metrics
from medflow.evaluation.plots import (
    confusion_counts,
    plot_confusion,
    plot_decision_curve,
    plot_forest,
    plot_importance,
    plot_learning_curves,
    plot_permutation,
    plot_pr,
    plot_predicted_observed,
    plot_reliability,
    plot_residuals,
    plot_roc,
    plot_smoothed_calibration,
    pr_curves,
    prediction_bins,
    reliability_bins,
    roc_curves,
    roc_points,
)
from medflow.evaluation.subgroups import group_labels, subgroup_report
from medflow.evaluation.threshold import choose_threshold
from medflow.models.bundle import Predictor
from medflow.models.recalibration import scale
from medflow.params import Params
from medflow.paths import Paths
from medflow.promotion.card import decision_table, four, survival_calibration_table
from medflow.tasks import for_params

LEARNING_CURVE_KEYS = (
    "train_loss", "val_loss", "train_accuracy", "val_accuracy", "train_mae", "val_mae", "train_c_index", "val_c_index"
)  # fmt: skip


def _finite(d: dict) -> dict:
    """DVC metrics and MLflow take numbers only; an undefined metric (one class in the test split) is left out."""
    return {k: round(float(v), 6) for k, v in d.items() if not math.isnan(v)}


def _history(run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = tracking.store.client()
    out = {}
    for key in LEARNING_CURVE_KEYS:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if points:
            out[key] = points
    return out


def _header(report: dict, note: str = "") -> list[str]:
    """Every task's report opens alike: what was scored and how its intervals were drawn; note: the task's own."""
    events = f", {report['test_events']} events" if "test_events" in report else ""
    return [
        "# Evaluation (test split)",
        "",
        f"{report['test_rows']} rows, {report['test_patients']} patients{events}; intervals: 95% percentile "
        f"bootstrap over {report['resampled']} ({report['n_boot']} resamples).{note}",
        "",
    ]


def _metric_rows(metrics: dict, names, decision: dict | None = None) -> list[str]:
    """The metric table: test_<name> with its CI where it has one; decision: a column saying where each is read."""
    extra = " decision |" if decision is not None else ""
    lines = [f"| metric | value | 95% CI |{extra}", "|---|---|---|" + ("---|" if extra else "")]
    for name in names:
        k = f"test_{name}"
        if k not in metrics:
            continue
        lo, hi = metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")
        ci = f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
        tail = f" {decision.get(name, '')} |" if decision is not None else ""
        lines.append(f"| {name} | {metrics[k]:.4f} | {ci} |{tail}")
    return lines


def _tested(metrics: dict) -> list[str]:
    return sorted(
        k.removeprefix("test_") for k in metrics if k.startswith("test_") and not k.endswith(("_low", "_high"))
    )


def _footer(report: dict) -> list[str]:
    """The permutation importance table, the development and evaluation data, the subgroup table when
    evaluate.subgroups named columns, and a note when there are no learning curves."""
    lines = _permutation_md(report.get("permutation_importance"))
    if report.get("characteristics"):
        lines += ["", "## Development and evaluation data", "", *characteristics.markdown(report["characteristics"])]
    sub = report.get("subgroups")
    if sub:
        p = sub["primary_metric"]
        worst = "highest" if sub.get("lower_is_better") else "lowest"
        lines += [
            "",
            f"## Subgroups ({p}; groups under {sub['min_patients']} patients suppressed)",
            "",
            "| group | patients | rows | " + p + " | 95% CI |",
            "|---|---|---|---|---|",
        ]
        for r in sub["groups"]:
            if p in r:
                lines.append(
                    f"| {r['group']} | {r['patients']} | {r['rows']} | {r[p]:.4f} | "
                    f"[{r[p + '_ci_low']:.4f}, {r[p + '_ci_high']:.4f}] |"
                )
            else:
                lines.append(f"| {r['group']} | {r['patients']} | {r.get('rows', '')} | | |")
        if sub["worst"]:
            lines += [
                "",
                f"Worst group ({worst} {p}): {sub['worst']['group']} ({sub['worst'][p]:.4f}); "
                f"largest gap within a column: {sub['largest_gap'] or 0:.4f}.",
            ]
    if report.get("learning_curves") is None:
        lines += ["", "No per-epoch history on the training run: no learning curves."]
    return lines


def _permutation_md(found: dict | None) -> list[str]:
    if not found:
        return []
    worse = "rise" if found["lower_is_better"] else "fall"
    return [
        "",
        f"## Permutation importance ({worse} of {found['metric']} with the column shuffled; {found['rows']} test rows)",
        "",
        "| feature | loss | 95% CI |",
        "|---|---|---|",
        *(
            f"| {r['feature']} | {four(r['drop'])} | [{four(r['ci_low'])}, {four(r['ci_high'])}] |"
            for r in found["features"]
        ),
    ]


def _report_md(report: dict, metrics: dict) -> str:
    lines = _header(report)
    t = report.get("threshold")
    if t is not None:
        lines += [f"Decision threshold {t['value']:.4f}: {t['method']}.", ""]
    # Two operating points share the table: a reader comparing accuracy with sensitivity must see which is which.
    at = {m: "most probable class" for m in ("accuracy", "balanced_accuracy", "f1")}
    if t is not None:
        at |= {m: f"positive at score >= {t['value']:.4f}" for m in ("sensitivity", "specificity", "ppv", "npv")}
    lines += _metric_rows(metrics, _tested(metrics), at)
    lines += [
        "",
        f"Temperature scaling (T = {metrics['temperature']:.3f}, fitted on the validation split, not applied to the"
        f" model) would take the test ECE to {metrics['test_ece_scaled']:.4f} and the Brier score to"
        f" {metrics['test_brier_scaled']:.4f}.",
    ]
    lines += _clinical_md(report)
    ex = report.get("explanations")
    if ex:
        lines += ["", f"## Global explanation ({ex['method']}; {ex['rows']} test rows)", ""]
        lines += ["| feature | mean abs. contribution (log-odds) |", "|---|---|"]
        lines += [f"| {r['feature']} | {r['mean_abs']:.4f} |" for r in ex["features"]]
    return "\n".join(lines + _footer(report)) + "\n"


def _clinical_md(report: dict) -> list[str]:
    fit, dca = report.get("calibration_fit"), report.get("decision_curve")
    if not fit:
        return []
    lines = [
        "",
        "## Calibration intercept and slope",
        "",
        "Logistic recalibration of the outcome on the logit of the predicted probability (statsmodels binomial GLM): "
        "intercept with the slope fixed at 1 (0: calibrated in the large), and slope (1: calibrated).",
        "",
        "| measure | value | 95% CI |",
        "|---|---|---|",
    ]
    for k in ("calibration_intercept", "calibration_slope"):
        lines.append(f"| {k} | {fit[k]:.4f} | [{fit[k + '_ci_low']:.4f}, {fit[k + '_ci_high']:.4f}] |")
    if fit["resamples_without_fit"]:
        lines += ["", f"{fit['resamples_without_fit']} resamples the logit separates perfectly have no finite fit: "
                  "left out of the intervals."]  # fmt: skip
    lines += ["", f"## Decision curve (net benefit; {dca['method']})", "", *decision_table(dca)]
    return lines


def _regression_md(report: dict, metrics: dict) -> str:
    lines = _header(
        report,
        " MAE and RMSE in the target's units (lower is better); calibration-in-the-large is mean observed - mean "
        "predicted (0 is calibrated), the calibration slope that of observed on predicted (1 is calibrated).",
    )
    lines += _metric_rows(metrics, regression.METRICS)
    return "\n".join(lines + _footer(report)) + "\n"


def _regression(params: Params, paths: Paths, test, predictor: Predictor, task) -> tuple[dict, dict]:
    """A regression's metrics with their patient-bootstrap intervals, its report, its binned plots and subgroups."""
    ep = params.evaluate
    y, pred = test[LABEL].to_numpy(dtype="float64"), score(predictor, paths, test, "tabular")[:, 0]
    groups = patient_keys(paths, test[ROW_ID])
    metrics = _finite({f"test_{k}": v for k, v in regression.point_metrics(y, pred).items()})
    for k, (lo, hi) in regression.bootstrap_ci(y, pred, groups, ep.n_boot, params.seed).items():
        if f"test_{k}" in metrics:
            metrics |= _finite({f"test_{k}_ci_low": lo, f"test_{k}_ci_high": hi})
    n_patients = len(np.unique(groups)) if groups is not None else len(test)
    metrics |= {"n_test": len(test), "n_test_patients": n_patients}
    plots = paths.step_dir("evaluate") / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    bins = prediction_bins(y, pred, ep.calibration_bins, params.validate_.small_count)
    target = predictor.schema.target
    plot_predicted_observed(bins, plots / "predicted_vs_observed.png", target)
    plot_residuals(bins, plots / "residuals.png", target)
    # dvc.yaml's ROC plot tracks this file for every task; a regression has no curve to put in it.
    (paths.step_dir("evaluate") / "roc.json").write_text("[]\n")
    report = {
        "test_rows": len(test),
        "test_patients": n_patients,
        "resampled": "rows (no patient id)" if groups is None else "patients",
        "n_boot": ep.n_boot,
        "bins": {k: bins[k] for k in ("predicted", "observed", "residual", "counts")},
        "permutation_importance": _permutation(params, predictor, test, y, groups, task, plots),
    }
    scored = Scored(y, pred[:, None], groups, metrics.get(f"test_{params.evaluate.primary_metric}"))
    _subgroups(params, paths, test[predictor.schema.features], scored, metrics, report, task)
    return metrics, report


def _survival_md(report: dict, metrics: dict) -> str:
    lines = _header(
        report,
        " Harrell's and Uno's C (Uno's truncated at the last horizon) and the AUC at each horizon: higher is "
        "better; the Brier score and its integral over time: lower is better. Censoring weights come from the "
        "training split. Horizons in the time column's units: "
        + ", ".join(f"{h:g}" for h in report["horizons"])
        + (f" ({report['horizons_note']})." if report.get("horizons_note") else "."),
    )
    lines += _metric_rows(metrics, _tested(metrics))
    lines += [
        "",
        "Calibration: mean predicted survival against the Kaplan-Meier estimate of each risk group (1 lowest risk).",
        "",
        *survival_calibration_table(report["calibration"]),
    ]
    dca = report.get("decision_curve")
    if dca:
        lines += ["", f"## Decision curve at {dca['horizon']:g} (net benefit; {dca['method']})", ""]
        lines += decision_table(dca)
    return "\n".join(lines + _footer(report)) + "\n"


def _survival(params: Params, paths: Paths, df, test, predictor: Predictor, task) -> tuple[dict, dict]:
    """A survival model's C-indices, Brier score at each horizon the test follow-up spans and integrated Brier
    score with their patient-bootstrap intervals, AUC at each horizon, calibration by risk group and the
    Kaplan-Meier plot."""
    ep, seed = params.evaluate, params.seed
    train = df[df[SPLIT] == "train"]
    t0, e0 = train[TIME].to_numpy(dtype="float64"), train[LABEL].to_numpy() > 0
    time, event = test[TIME].to_numpy(dtype="float64"), test[LABEL].to_numpy() > 0
    risk = score(predictor, paths, test, "tabular")[:, 0]
    groups = patient_keys(paths, test[ROW_ID])
    found = survival.measure(
        t0, e0, time, event, risk, predictor.survival_at, predictor.horizons, groups, ep.n_boot, seed
    )
    metrics = {}
    for name, (value, lo, hi) in found.metrics.items():
        metrics |= _finite({f"test_{name}": value, f"test_{name}_ci_low": lo, f"test_{name}_ci_high": hi})
    horizons, calibration, km = found.horizons, [], []
    plots = paths.step_dir("evaluate") / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    dca = None
    if horizons:
        calibration = survival.calibration(time, event, risk, found.at, horizons, small=params.validate_.small_count)
        km = survival.km_by_group(time, event, risk, found.on_grid, found.grid, small=params.validate_.small_count)
        survival.plot_km_by_group(km, plots / "km_by_risk_group.png", f"{params.data.time} (time column's units)")
        # At the last horizon, where Uno's C is truncated: the predicted probability of the event by then.
        last = horizons[-1]
        table = decision_curve.net_benefit(event, 1 - found.at[:, -1], decision_curve.grid(ep.dca_thresholds), time,
                                           last)  # fmt: skip
        plot_decision_curve(table, plots / "decision_curve.png", None)
        method = f"dcurves {_version('dcurves')}, events by {last:g} from Kaplan-Meier above each threshold"
        dca = {"table": table, "operating_point": None, "method": method, "horizon": last}
    # dvc.yaml's ROC plot tracks this file for every task; a survival model's curves are the KM plot's.
    (paths.step_dir("evaluate") / "roc.json").write_text("[]\n")
    n_patients = len(np.unique(groups)) if groups is not None else len(test)
    metrics |= {"n_test": len(test), "n_test_patients": n_patients, "n_test_events": int(event.sum())}
    report = {
        "test_rows": len(test),
        "test_patients": n_patients,
        "test_events": int(event.sum()),
        "resampled": "rows (no patient id)" if groups is None else "patients",
        "n_boot": ep.n_boot,
        "horizons": horizons,
        "horizons_note": f"{len(found.left)} horizon(s) outside the test follow-up left out" if found.left else None,
        "calibration": calibration,
        "decision_curve": dca,
    }
    y = np.column_stack([time, event])
    report["permutation_importance"] = _permutation(params, predictor, test, y, groups, task, plots)
    scored = Scored(y, risk[:, None], groups, metrics.get("test_c_index"))
    _subgroups(params, paths, test[predictor.schema.features], scored, metrics, report, task)
    return metrics, report


def run(params: Params, paths: Paths) -> dict:
    ep = params.evaluate
    task = for_params(params)
    if task.name == "segmentation":
        from medflow.segmentation import evaluate as segmentation

        return segmentation.run(params, paths)
    df, schema = load_split(paths)
    test = df[df[SPLIT] == "test"]
    if test.empty:
        raise ValueError(f"{paths.manifest}: the test split is empty; enlarge the data or split.test")
    # TRIPOD+AI 20c: the development rows against the evaluation rows, feature by feature.
    small = params.validate_.small_count
    data = characteristics.development_vs_evaluation(df, schema, small) if schema.kind == "tabular" else None
    # Scoring goes through the same Predictor the registered model uses.
    predictor = Predictor(paths.model_bundle)
    if task.name == "survival":
        metrics, report = _survival(params, paths, df, test, predictor, task)
        report["characteristics"] = data
        return _finish(params, paths, metrics, report, _survival_md, task.epoch_metric)
    if not task.has_classes:
        metrics, report = _regression(params, paths, test, predictor, task)
        report["characteristics"] = data
        return _finish(params, paths, metrics, report, _regression_md, task.epoch_metric)
    proba = score(predictor, paths, test, schema.kind)
    y = test[LABEL].to_numpy()
    groups = patient_keys(paths, test[ROW_ID])
    binary = len(schema.classes) == 2

    val = df[df[SPLIT] == "val"]
    y_val, proba_val = val[LABEL].to_numpy(), score(predictor, paths, val, schema.kind)
    threshold, method = None, None
    if binary:
        if len(np.unique(y_val)) == 2:
            method = f"{ep.threshold}, chosen on the validation split"
            threshold = choose_threshold(y_val, proba_val[:, 1], ep.threshold, ep.target_sensitivity)
        else:
            # Nothing to choose from on a one-class validation split: the most probable class decides, as argmax.
            threshold, method = 0.5, "0.5 (the validation split holds one class)"

    point = point_metrics(y, proba)
    # Brier, ECE and the threshold metrics: the same code as their bootstrap, on all rows at weight 1.
    extra = weighted_metrics(y, proba, np.ones((1, len(y))), threshold, ep.calibration_bins)
    point |= {k: float(v[0]) for k, v in extra.items() if k not in point}
    out = paths.step_dir("evaluate")
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    operating = None
    if threshold is not None and "specificity" in point and "sensitivity" in point:
        operating = (1 - point["specificity"], point["sensitivity"])
    plot_roc(roc_curves(y, proba, schema.classes), plots / "roc.png", operating)
    plot_pr(pr_curves(y, proba, schema.classes), plots / "precision_recall.png", binary)
    if threshold is not None:
        pred, title = (proba[:, 1] >= threshold).astype(int), f"Confusion matrix at threshold {threshold:.3f} (test)"
    else:
        pred, title = proba.argmax(axis=1), "Confusion matrix, most probable class (test)"
    counts = confusion_counts(y, pred, len(schema.classes))
    plot_confusion(counts, schema.classes, plots / "confusion_matrix.png", title)
    if binary:
        confidence, hit, label = proba[:, 1], (y == 1).astype(float), f"P({schema.classes[1]})"
    else:
        confidence, hit, label = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float), "top-class confidence"
    bins = reliability_bins(confidence, hit, ep.calibration_bins)
    plot_reliability(bins, plots / "reliability.png", label)
    ci = bootstrap_ci(y, proba, groups, ep.n_boot, params.seed, threshold, ep.calibration_bins)
    metrics = _finite({f"test_{k}": v for k, v in point.items()})
    for k, (lo, hi) in ci.items():
        if f"test_{k}" in metrics:
            metrics |= _finite({f"test_{k}_ci_low": lo, f"test_{k}_ci_high": hi})
    n_patients = len(np.unique(groups)) if groups is not None else len(test)
    metrics |= {"n_test": len(test), "n_test_patients": n_patients}
    if threshold is not None:
        metrics["threshold"] = round(threshold, 6)
    temperature = fit_temperature(y_val, proba_val)
    scaled = weighted_metrics(y, scale(proba, temperature), np.ones((1, len(y))), None, ep.calibration_bins)
    metrics |= _finite(
        {"temperature": temperature, "test_ece_scaled": scaled["ece"][0], "test_brier_scaled": scaled["brier"][0]}
    )
    report: dict = {
        "test_rows": len(test),
        "test_patients": n_patients,
        "resampled": "rows (no patient id)" if groups is None else "patients",
        "n_boot": ep.n_boot,
        "threshold": None
        if threshold is None
        else {"value": threshold, "method": method, "target_sensitivity": ep.target_sensitivity},
        "calibration_bins": ep.calibration_bins,
        "characteristics": data,
    }
    if schema.kind == "tabular":
        report["explanations"] = _explanations(predictor, test, plots, params.seed)
        report["permutation_importance"] = _permutation(params, predictor, test, y, groups, task, plots)
    if schema.kind == "image" and ep.saliency_cases:
        report["saliency"] = _saliency(predictor, paths, test, y, proba, pred, ep.saliency_cases)
    if binary:
        report |= _clinical(params, y, proba[:, 1], groups, threshold, plots, f"P({schema.classes[1]})")
        fit = report["calibration_fit"]
        metrics |= _finite({f"test_{k}": v for k, v in fit.items() if k.startswith("calibration_")})
    scored = Scored(y, proba, groups, point[ep.primary_metric])
    _subgroups(params, paths, test[schema.features], scored, metrics, report, task, threshold)
    (out / "roc.json").write_text(json.dumps(roc_points(y, proba, schema.classes)) + "\n")
    return _finish(params, paths, metrics, report, _report_md, task.epoch_metric)


@dataclass(frozen=True)
class Scored:
    """The test split as the task scores it: y and out (class indices and probabilities, values and predictions,
    or (time, event) and risk), each row's patient, and the whole split's primary metric."""

    y: np.ndarray
    out: np.ndarray
    groups: np.ndarray | None
    overall: float | None


def _subgroups(params: Params, paths: Paths, features, scored: Scored, metrics, report, task, threshold=None) -> None:
    """evaluate.subgroups: the primary metric of each group with its patient-bootstrap CI, in the report, the
    metrics (the worst group, the largest gap) and a forest plot. features: the test rows' feature columns only (the
    patient key, row id and label are columns too, and no group may be named after them)."""
    ep = params.evaluate
    if not ep.subgroups:
        return
    labels = group_labels(features, ep.subgroups, ep.subgroup_bins)
    sub = subgroup_report(
        scored.y, scored.out, scored.groups, labels, ep.primary_metric, ep.min_group_patients, ep.n_boot,
        params.seed, threshold, task,
    )  # fmt: skip
    report["subgroups"] = sub
    if sub["worst"]:
        metrics[f"test_subgroup_worst_{ep.primary_metric}"] = round(sub["worst"][ep.primary_metric], 6)
    if sub["largest_gap"] is not None:
        metrics[f"test_subgroup_gap_{ep.primary_metric}"] = round(sub["largest_gap"], 6)
    plot_forest(sub, paths.step_dir("evaluate") / "plots" / "subgroups.png", scored.overall)


def _clinical(params: Params, y, p, groups, threshold: float, plots, label: str) -> dict:
    """Binary: the calibration intercept and slope with patient-bootstrap intervals, the smoothed calibration curve,
    and the decision curve with the operating point; aggregates only, drawn and returned for the report."""
    ep = params.evaluate
    fit = logistic_calibration(y, p, groups, ep.n_boot, params.seed)
    curve = smoothed_curve(y, p)
    plot_smoothed_calibration(curve, fit, plots / "calibration_curve.png", label)
    table = decision_curve.net_benefit(y, p, decision_curve.grid(ep.dca_thresholds))
    operating = decision_curve.net_benefit(y, p, [round(threshold, 6)])[0] if 0 < threshold < 1 else None
    plot_decision_curve(table, plots / "decision_curve.png", operating)
    return {
        "calibration_fit": fit,
        "calibration_curve": curve,
        "decision_curve": {"table": table, "operating_point": operating, "method": "dcurves " + _version("dcurves")},
    }


# Integrated gradients cost 32 forward and backward passes per row: a seeded sample of test rows is enough for a mean.
EXPLAIN_ROWS = 2000


def _explanations(predictor: Predictor, test, plots, seed: int) -> dict:
    """Mean |contribution| per input column on the test split (models/explain.py), drawn and returned."""
    from medflow.models import explain

    rows = test.sample(EXPLAIN_ROWS, random_state=seed) if len(test) > EXPLAIN_ROWS else test
    columns, contributions = explain.attributions(predictor, rows)
    importance = explain.global_importance(columns, contributions)
    method = explain.method(predictor)
    plot_importance(importance, plots / "explanations.png", method)
    return {"method": method, "rows": len(rows), "features": importance}


def _permutation(params: Params, predictor: Predictor, test, y, groups, task, plots) -> dict | None:
    """The primary metric's loss when each input column is shuffled (evaluation/permutation.py), drawn and returned;
    None for a model of images or sequences, with evaluate.importance_rows 0, or with the metric undefined there."""
    ep = params.evaluate
    if predictor.schema.kind != "tabular" or not ep.importance_rows:
        return None
    found = permutation.importance(
        task, ep.primary_metric, y, test, list(predictor.schema.features), predictor.outputs, groups,
        ep.importance_rows, ep.n_boot, params.seed,
    )  # fmt: skip
    if found:
        plot_permutation(found, plots / "permutation_importance.png")
    return found


def _saliency(predictor: Predictor, paths: Paths, test, y, proba, pred, k: int) -> dict:
    """evaluate.saliency_cases test images, picked by the rank of the confidence in the predicted class (pred, as
    the confusion matrix labels them), drawn with their attributions (evaluation/saliency.py)."""
    from medflow.data.image_store import ImageStore
    from medflow.evaluation import saliency

    confidence = proba[np.arange(len(pred)), pred]
    cases = saliency.pick(y, pred, confidence, k)
    store, rows = ImageStore(paths.images), test.index.to_numpy()
    images = np.stack([store.read(r, r + 1)[0] for r in rows[[i for i, _ in cases]]])
    plots = paths.step_dir("evaluate") / "plots"
    return saliency.draw(predictor, images, y, pred, confidence, cases, plots)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _finish(params: Params, paths: Paths, metrics: dict, report: dict, markdown, score: str) -> dict:
    """Learning curves, then metrics.json, report.json and report.md written and logged to the training run."""
    out = paths.step_dir("evaluate")
    plots = out / "plots"
    primary = f"test_{params.evaluate.primary_metric}"
    if primary not in metrics:
        raise ValueError(f"evaluate.primary_metric={params.evaluate.primary_metric!r} is undefined on this test split")
    run_id = json.loads(paths.train_run.read_text())["run_id"]
    tracking.configure(paths)
    history = _history(run_id)
    report["learning_curves"] = sorted(history) or None
    if history:
        best = json.loads(paths.summary("train").read_text()).get("best_epoch")
        plot_learning_curves(history, plots / "learning_curves.png", best, score)

    paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report, metrics))
    tracking.log_metrics(run_id, metrics)
    tracking.log_artifacts(run_id, plots, "evaluation")
    for name in ("report.json", "report.md"):
        tracking.log_artifacts(run_id, out / name, "evaluation")
    return {"run_id": run_id, **{k: metrics[k] for k in sorted(metrics) if not k.endswith(("_low", "_high"))}}
