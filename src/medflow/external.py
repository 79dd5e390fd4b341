"""`medflow evaluate-external`: a registered model (classifier, regression or survival) on another site's labelled
table. The rows go through the model's own row checks (refused rows are counted with their reasons, never scored),
then the metrics evaluate computes for the task with patient-bootstrap intervals (a binary classifier's also with the
calibration intercept and slope and the decision curve); the report is logged on the version's run, tagged on the
version, appended to the audit trail and added to the card. No alias moves.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medflow.evaluation.metrics import patient_groups
from medflow.params import Params
from medflow.paths import Paths

TAG = "medflow.external."


def _label(label: str) -> str:
    """A name MLflow takes in a tag key and an artifact path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "external"


def evaluate_external(params: Params, paths: Paths, model_uri: str, data: Path, label: str | None = None) -> dict:
    from medflow.monitoring import batch
    from medflow.monitoring.report import observed
    from medflow.tasks import of
    from medflow.tracking.bundles import registered_predictor
    from medflow.tracking.registry import resolve

    name, version = resolve(model_uri)
    label = _label(label or data.stem)
    rows = batch.read([data], params.data.exclude)
    with registered_predictor(name, version) as predictor:
        schema, task = predictor.schema, of(predictor.schema)
        if task.name not in ("classification", "regression", "survival"):
            raise ValueError(
                f"{name} v{version.version}: a {task.name} model; rule: evaluate-external measures models of tables"
            )
        needed = [c for c in (schema.target, schema.time) if c and c not in rows.columns]
        if needed:
            what = "the follow-up time and the event" if schema.time else "the label"
            raise ValueError(f"{data}: column(s) {needed} ({what}) missing; rule: a labelled table")
        scored = predictor.score(rows)
        ok = scored["status"].eq("ok").to_numpy()
        labelled, y, unlabelled = observed(rows, ok, predictor)
        classes = list(predictor.classes)
        survival_at, horizons = predictor.survival_at, predictor.horizons
    # The model's task decides the metric: params.yaml may be another project's (a classifier's roc_auc).
    ep = params.evaluate
    primary = ep.primary_metric if ep.primary_metric in task.primaries else task.primaries[0]
    kind, enough = task.name, len(y) >= params.monitor.min_rows
    if kind == "classification" and len(np.unique(y)) < len(classes):
        raise ValueError(
            f"{data}: {len(y)} scored labelled row(s) holding {len(np.unique(y))} of {len(classes)} classes; rule: at "
            f"least monitor.min_rows={params.monitor.min_rows} rows and every class"
        )
    if not enough or (kind == "survival" and not y[:, 1].any()):
        events = f" ({int(y[:, 1].sum())} events)" if kind == "survival" else ""
        # A survival row counts when its follow-up time is a positive number and its event reads as 1 or 0.
        usable = f" (a positive {schema.time!r} and a 1/0 {schema.target!r})" if kind == "survival" else ""
        raise ValueError(
            f"{data}: {len(y)} scored labelled row(s){usable}{events}; rule: at least monitor.min_rows="
            f"{params.monitor.min_rows} rows" + (" and one event" if kind == "survival" else "")
        )
    pid = params.data.patient_id or schema.patient_id
    groups = patient_groups(rows.loc[labelled, pid]) if pid and pid in rows.columns else None
    reasons = scored.loc[~ok, "reason"].value_counts()
    report = {
        "model": {"name": name, "version": version.version, "run_id": version.run_id},
        "task": kind,
        "label": label,
        "file": data.name,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(rows),
        "refused": int((~ok).sum()),
        # Reasons name a column and a rule, never a value (models/scoring.py); counts under small_count are pooled.
        "refused_reasons": {str(r): int(n) for r, n in reasons.items() if n >= params.validate_.small_count},
        "unlabelled": int((ok & ~labelled).sum()),
        # A row may break both survival rules: the counts are per rule, pooled under small_count as refused ones are.
        "unlabelled_reasons": {r: n for r, n in unlabelled.items() if n >= params.validate_.small_count},
        "evaluated_rows": len(y),
        "resampled": "patients" if groups is not None else "rows (no patient id)",
        "n_boot": ep.n_boot,
        "threshold": None,
        "primary_metric": primary,
    }
    if kind == "classification":
        proba = scored.loc[labelled, [f"proba_{c}" for c in classes]].to_numpy(dtype="float64")
        report |= _classification(params, version, y, proba, groups)
    elif kind == "survival":
        risk = scored.loc[labelled, "risk"].to_numpy(dtype="float64")
        report |= _survival(params, y, risk, groups, survival_at, horizons)
    else:
        pred = scored.loc[labelled, "prediction"].to_numpy(dtype="float64")
        report |= _regression(params, y, pred, groups)
    out = paths.root / "artifacts" / "external" / f"{label}-v{version.version}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    _record(name, version, report, out)
    return report | {"report_dir": str(out)}


def _with_ci(point: dict, ci: dict) -> dict:
    """{metric: {value, ci_low, ci_high}} for each metric with an interval."""
    return {k: {"value": float(v), "ci_low": ci[k][0], "ci_high": ci[k][1]} for k, v in point.items() if k in ci}


def _classification(params: Params, version, y, proba, groups) -> dict:
    """evaluate's test metrics at the version's threshold; binary: the calibration fit and the decision curve."""
    from medflow import tracking
    from medflow.evaluation.calibration import logistic_calibration
    from medflow.evaluation.decision_curve import grid, net_benefit
    from medflow.evaluation.metrics import bootstrap_ci, point_metrics, weighted_metrics

    ep, binary = params.evaluate, proba.shape[1] == 2
    threshold = tracking.metric_of(version, "threshold") if binary else None
    point = point_metrics(y, proba)
    point |= {
        k: float(v[0])
        for k, v in weighted_metrics(y, proba, np.ones((1, len(y))), threshold, ep.calibration_bins).items()
        if k not in point
    }
    ci = bootstrap_ci(y, proba, groups, ep.n_boot, params.seed, threshold, ep.calibration_bins)
    found = {"threshold": threshold, "metrics": _with_ci(point, ci)}
    if binary:
        found["calibration_fit"] = logistic_calibration(y, proba[:, 1], groups, ep.n_boot, params.seed)
        found["decision_curve"] = {
            "table": net_benefit(y, proba[:, 1], grid(ep.dca_thresholds)),
            "operating_point": net_benefit(y, proba[:, 1], [round(threshold, 6)])[0] if threshold else None,
            "method": "dcurves",
        }
    return found


def _regression(params: Params, y, pred, groups) -> dict:
    """evaluate's regression metrics (evaluation/regression.py) with their patient-bootstrap intervals."""
    from medflow.evaluation import regression

    ci = regression.bootstrap_ci(y, pred, groups, params.evaluate.n_boot, params.seed)
    point = {k: v for k, v in regression.point_metrics(y, pred).items() if not np.isnan(v)}
    return {"metrics": _with_ci(point, ci)}


def _survival(params: Params, y, risk, groups, survival_at, horizons) -> dict:
    """evaluate's survival metrics (evaluation/survival.measure) with their patient-bootstrap intervals. Uno's C,
    the AUC and the Brier score weigh rows by the censoring of the rows themselves: the training split is not at
    hand, and the site's own follow-up is what its censoring is."""
    from medflow.evaluation import survival

    time, event = y[:, 0], y[:, 1] > 0
    ep = params.evaluate
    found = survival.measure(time, event, time, event, risk, survival_at, horizons, groups, ep.n_boot, params.seed)
    # mean_auc has no interval (NaN), nor a metric undefined on these rows: the report lists those with one.
    finite = {k: m for k, m in found.metrics.items() if not np.isnan(m).any()}
    return {
        "events": int(event.sum()),
        "horizons": found.horizons,
        "metrics": _with_ci(
            {k: v for k, (v, _, _) in finite.items()}, {k: (lo, hi) for k, (_, lo, hi) in finite.items()}
        ),
        "censoring_weights": "Kaplan-Meier of the evaluated rows' own censoring",
    }


def _record(name: str, version, report: dict, out: Path) -> None:
    """The report on the version's run, a tag on the version, an audit record and a row in the card."""
    from medflow import tracking
    from medflow.tracking import audit
    from medflow.tracking.registry import add_validation

    label, metric = report["label"], report["primary_metric"]
    m = report["metrics"].get(metric)
    summary = (
        f"{metric}={m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}], {report['evaluated_rows']} rows"
        if m
        else f"{metric} undefined, {report['evaluated_rows']} rows"
    )
    tracking.log_artifacts(version.run_id, out, f"external/{label}")
    tracking.set_version_tags(name, version.version, {TAG + label: summary})
    counts = {k: report[k] for k in ("rows", "refused", "unlabelled", "evaluated_rows")}
    after = {"label": label, **counts, metric: m["value"] if m else None}
    audit.append(name, "version.external", f"models:/{name}/{version.version}", None, after, version.run_id)
    value = m or {"value": float("nan")}
    add_validation(name, version.version, {"kind": f"external: {label}", "metric": metric, **value,
                                           "rows": report["evaluated_rows"]})  # fmt: skip


def _survival_note(report: dict) -> str:
    if report.get("task") != "survival":
        return ""
    at = ", ".join(f"{h:g}" for h in report["horizons"]) or "none inside the follow-up"
    return (
        f" {report['events']} events. Harrell's C (primary) and Uno's C, the AUC and Brier score at the model's "
        f"horizons ({at}, in the time column's units); the censoring weights: {report['censoring_weights']}."
    )


def markdown(report: dict) -> str:
    from medflow.promotion.card import decision_table

    m, th = report["model"], report["threshold"]
    lines = [
        f"# External validation: {m['name']} v{m['version']} on `{report['label']}`",
        "",
        f"{report['rows']} rows read from `{report['file']}`: {report['refused']} refused by the model's row checks, "
        f"{report['unlabelled']} without a label, {report['evaluated_rows']} evaluated. Intervals: 95% bootstrap over "
        f"{report['resampled']} ({report['n_boot']} resamples)."
        + (f" Threshold {th:.4f}, chosen on the development validation split." if th is not None else "")
        + _survival_note(report),
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {v['value']:.4f} | [{v['ci_low']:.4f}, {v['ci_high']:.4f}] |" for k, v in report["metrics"].items()
    ]
    if report["refused_reasons"]:
        lines += ["", "| refused because | rows |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in report["refused_reasons"].items()]
    if report["unlabelled_reasons"]:
        lines += ["", "| without a label because | rows |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in report["unlabelled_reasons"].items()]
    fit = report.get("calibration_fit")
    if fit:
        lines += ["", "## Calibration", "", "| measure | value | 95% CI |", "|---|---|---|"]
        for k in ("calibration_intercept", "calibration_slope"):
            lines.append(f"| {k} | {fit[k]:.4f} | [{fit[k + '_ci_low']:.4f}, {fit[k + '_ci_high']:.4f}] |")
        if fit["resamples_without_fit"]:
            lines += ["", f"{fit['resamples_without_fit']} resamples without a finite fit left out of the intervals."]
        lines += ["", "## Decision curve (net benefit)", "", *decision_table(report["decision_curve"])]
    return "\n".join(lines) + "\n"
