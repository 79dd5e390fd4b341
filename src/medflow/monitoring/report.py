"""One check of a batch against the champion: the drift report (JSON-able dict), its Markdown and its plots.

The report holds aggregates only (rates, PSI, KS, shares of categories the reference lists, bin counts of the
score); the batch's rows stay in memory. Patient ids, when the batch has them, only group rows for the bootstrap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.events import event_flags
from medflow.data.features import coerce_features, encode_labels
from medflow.data.numbers import NumberFormat, parse
from medflow.evaluation import regression, survival
from medflow.evaluation.metrics import bootstrap_ci, patient_groups, weighted_metric
from medflow.models.bundle import Predictor
from medflow.monitoring import drift
from medflow.monitoring.drift import cell
from medflow.monitoring.reference import bin_counts, positive_score
from medflow.tasks import of


def observed(batch: pd.DataFrame, ok: np.ndarray, predictor: Predictor) -> tuple[np.ndarray, np.ndarray, dict]:
    """Which rows carry a label the model can be judged on, those labels (class indices, or numbers read as
    validate reads a regression target), and how many of the scored (ok) rows each label rule left out, by rule."""
    schema = predictor.schema
    if schema.time:
        # Survival: a row is labelled when its follow-up time is a positive number and its event reads as one.
        time = parse(batch[schema.time], NumberFormat()).to_numpy(dtype="float64")
        event = event_flags(batch[schema.target], schema.event_value)
        failed = {
            f"{schema.time}: missing, not a number or not above 0": ~((time > 0) & np.isfinite(time)),
            f"{schema.target}: missing or not an event flag": event.isna().to_numpy(),
        }

        def labels(rows: np.ndarray) -> np.ndarray:
            return np.column_stack([time[rows], event[rows].to_numpy(dtype="float64")])
    elif of(schema).has_classes and schema.positive_class is not None:
        # One against the rest, as training read it: any word but the positive class is the negative class.
        failed = {f"{schema.target}: missing": batch[schema.target].isna().to_numpy()}

        def labels(rows: np.ndarray) -> np.ndarray:
            return encode_labels(batch.loc[rows, schema.target], schema)
    elif of(schema).has_classes:
        # As encode_labels reads them: another word ("Malignant" for "malignant") is no class of the model's.
        known = batch[schema.target].astype("string").str.strip().isin(schema.classes).fillna(False)
        failed = {f"{schema.target}: missing or not one of the model's classes": ~known.to_numpy(dtype=bool)}

        def labels(rows: np.ndarray) -> np.ndarray:
            return encode_labels(batch.loc[rows, schema.target], schema)
    else:
        number = parse(batch[schema.target], NumberFormat()).to_numpy(dtype="float64")
        failed = {f"{schema.target}: missing or not a number": ~np.isfinite(number)}

        def labels(rows: np.ndarray) -> np.ndarray:
            return number[rows]

    labelled = ok & ~np.logical_or.reduce(list(failed.values()))
    reasons = {rule: int((ok & rows).sum()) for rule, rows in failed.items() if (ok & rows).any()}
    return labelled, labels(labelled), reasons


def performance(batch: pd.DataFrame, proba: np.ndarray, ok: np.ndarray, predictor: Predictor, params) -> dict | None:
    """The primary metric on a labelled batch with its 95% CI over patients (rows when there is no patient id)."""
    schema, target = predictor.schema, predictor.schema.target
    if target not in batch.columns or (schema.time and schema.time not in batch.columns):
        return None
    labelled, y, _ = observed(batch, ok, predictor)
    if labelled.sum() < params.monitor.min_rows:
        return {"labelled_rows": int(labelled.sum()), "note": f"fewer than monitor.min_rows={params.monitor.min_rows}"}
    task = of(schema)
    if task.has_classes and len(np.unique(y)) < 2:
        return {"labelled_rows": int(labelled.sum()), "note": "one class only: no discrimination metric"}
    pid = params.data.patient_id
    groups = patient_groups(batch.loc[labelled, pid]) if pid and pid in batch.columns else None
    metric = params.evaluate.primary_metric
    p = proba[labelled]
    if task.has_classes:
        value = float(weighted_metric(metric, y, p, np.ones((1, len(y))))[0])
        lo, hi = bootstrap_ci(y, p, groups, params.evaluate.n_boot, params.seed)[metric]
    elif schema.time:
        c = survival.concordance(y[:, 0], y[:, 1], p[:, 0], groups, None, params.evaluate.n_boot, params.seed)
        value, lo, hi = c.value, c.ci_low, c.ci_high
    else:
        value = task.point(metric, y, p)
        lo, hi = regression.bootstrap_ci(y, p, groups, params.evaluate.n_boot, params.seed)[metric]
    return {
        "metric": metric,
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "labelled_rows": int(labelled.sum()),
        "resampled": "patients" if groups is not None else "rows (no patient id)",
        "prevalence": float(y.mean()) if len(predictor.classes) == 2 else None,
        # A metric better lower (MAE) judges monitor.performance_floor as a ceiling (drift.decide).
        **({} if task.higher_is_better(metric) else {"lower_is_better": True}),
    }


def output_columns(predictor: Predictor) -> list[str]:
    """The columns of Predictor.score holding the model's answer: a probability per class, a survival model's risk
    score, or a prediction."""
    if predictor.classes:
        return [f"proba_{c}" for c in predictor.classes]
    return ["risk"] if predictor.survival else ["prediction"]


def is_scored(batch: pd.DataFrame, columns: list[str]) -> bool:
    """A file `medflow predict` wrote (status and output_columns), rather than new input rows."""
    return {"status", "version", *columns} <= set(batch.columns)


def _prediction_drift(ref: dict, prediction: np.ndarray, mp) -> dict:
    """A regression's predictions drift as a numeric feature does, over the reference's bins of them; the bin counts
    go with it for the plot."""
    return drift.numeric_drift(ref, prediction, mp) | {"counts": bin_counts(prediction, ref["edges"])}


def check(
    batch: pd.DataFrame, reference: dict, predictor: Predictor, params, events: pd.DataFrame | None = None
) -> dict:
    """Compares a batch with the reference; returns the report with its decision. The batch is new input rows (raw
    text columns, as read): feature, score and, labelled, performance drift; or rows `medflow predict` scored (its
    output holds no features): score drift only. An event model's new rows are label rows with their events."""
    mp, k = params.monitor, params.validate_.small_count
    schema = predictor.schema
    columns = output_columns(predictor)
    features = {}
    if is_scored(batch, columns) and not set(schema.features) & set(batch.columns):
        ok = batch["status"].eq("ok").to_numpy()
        proba = batch[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        perf = None
    elif schema.kind == "events":
        if events is None:
            raise ValueError(
                "an event model's batch is label rows with their events (medflow monitor --events FILE), or the rows "
                "medflow predict --events scored"
            )
        # Each variable's distribution and missingness as the window aggregates the reference holds: the null rate
        # of <variable>_last is the share of stays that never charted it in their window.
        aggregates = predictor.stay_aggregates(batch, events)
        for col in schema.numeric:
            features[col] = drift.numeric_drift(reference["features"][col], aggregates[col].to_numpy("float64"), mp)
        scored = predictor.score_stays(batch, events)
        ok = scored["status"].eq("ok").to_numpy()
        proba = scored[columns].to_numpy(dtype="float64")
        perf = performance(batch, proba, ok, predictor, params)
    else:
        missing = [c for c in schema.features if c not in batch.columns]
        if missing:
            raise ValueError(f"the batch lacks the model's feature column(s) {missing}")
        typed = coerce_features(batch, schema)
        for col in schema.numeric:
            features[col] = drift.numeric_drift(reference["features"][col], typed[col].to_numpy(dtype="float64"), mp)
        for col in schema.categorical:
            features[col] = drift.categorical_drift(reference["features"][col], typed[col], mp, k)
        scored = predictor.score(batch)
        ok = scored["status"].eq("ok").to_numpy()
        proba = scored[columns].to_numpy(dtype="float64")
        perf = performance(batch, proba, ok, predictor, params)
    report = {
        "rows": int(len(batch)),
        "refused_rows": int((~ok).sum()),
        "features": features,
        "score": drift.score_drift(reference["score"], positive_score(proba[ok]), mp)
        if predictor.classes
        else _prediction_drift(reference["score"], proba[ok][:, 0], mp),
        "performance": perf,
        "thresholds": mp.model_dump(),
    }
    report["retrain_because"] = drift.decide(report, mp)
    report["drifted_features"] = [c for c, f in features.items() if f["drifted"]]
    if report["rows"] < mp.min_rows:
        report["status"] = f"too few rows ({report['rows']} < monitor.min_rows={mp.min_rows}): not judged"
    elif report["retrain_because"]:
        report["status"] = "drift: " + "; ".join(report["retrain_because"])
    else:
        report["status"] = "ok: no drift beyond the thresholds"
    return report


def markdown(report: dict) -> str:
    if report.get("task") == "segmentation":
        from medflow.monitoring import images  # torch: only for a segmentation model

        return images.markdown(report)
    m = report["model"]
    lines = [
        f"# Drift report: {m['name']} v{m['version']}",
        "",
        f"Batch `{report['batch']}`: {report['rows']} rows ({report['refused_rows']} refused by the model's row "
        f"checks), checked {report['checked_at']}.",
        "",
        f"**Status: {report['status']}**",
        "",
        "| feature | kind | PSI | KS D | p-value (KS or chi-square) | null rate (change) | drifted |",
        "|---|---|---|---|---|---|---|",
    ]
    for col, f in report["features"].items():
        p = f.get("ks_pvalue", f.get("chi2_pvalue"))
        lines.append(
            f"| {col} | {f['kind']} | {cell(f['psi'])} | {cell(f.get('ks'))} | {cell(p, '.2g')} | "
            f"{f['null_rate']:.3f} ({f['null_rate_change']:+.3f}) | {'yes' if f['drifted'] else ''} |"
        )
    if not report["features"]:
        lines += ["| (scores written by `medflow predict`: no input features to compare) | | | | | | |"]
    new = {c: f["new_categories"] for c, f in report["features"].items() if f.get("new_categories")}
    if new:
        lines += ["", "New categories: " + "; ".join(f"{c}: {', '.join(v)}" for c, v in new.items())]
    s = report["score"]
    if "predicted_prevalence" in s:
        lines += [
            "",
            f"Scores: PSI {cell(s['psi'])}; predicted prevalence {cell(s['predicted_prevalence'])} "
            f"(reference {cell(s['reference_predicted_prevalence'])}).",
        ]
    else:
        lines += [
            "",
            f"Predictions: PSI {cell(s['psi'])}, KS D {cell(s['ks'])} (p {cell(s['ks_pvalue'], '.2g')}); mean "
            f"{cell(s.get('mean'))} ({cell(s.get('mean_shift_sd'))} reference standard deviations from the reference's"
            " mean).",
        ]
    perf = report.get("performance")
    if perf and "value" in perf:
        lines += [
            "",
            f"Labelled rows: {perf['labelled_rows']}; {perf['metric']} {perf['value']:.3f} "
            f"(95% CI {cell(perf['ci_low'])}-{cell(perf['ci_high'])}, resampling {perf['resampled']}).",
        ]
    elif perf:
        lines += ["", f"Labelled rows: {perf['labelled_rows']} ({perf['note']})."]
    upd = report.get("update")
    if upd:
        lines += ["", f"Update: {upd['summary']}"]
    lines += [
        "",
        "A feature drifted when PSI (over the reference's bins, half a count added per bin) reaches the threshold "
        "and its test (KS from the binned CDFs, conservative; chi-square for categories) is significant, or its "
        "null rate rose. Thresholds: `monitor` in params.yaml.",
    ]
    return "\n".join(lines) + "\n"


def plots(report: dict, reference: dict, out: Path) -> list[Path]:
    from medflow.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    made = []
    mp = report["thresholds"]
    names = [c for c, f in report["features"].items() if f["psi"] is not None]
    if names:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.5))
        values = [report["features"][c]["psi"] for c in names]
        colours = ["crimson" if report["features"][c]["drifted"] else "steelblue" for c in names]
        ax.barh(names, values, color=colours)
        ax.axvline(mp["psi_threshold"], color="grey", linestyle="--", label=f"threshold {mp['psi_threshold']}")
        ax.set(xlabel="PSI (batch vs training reference)", title="Feature drift")
        ax.legend(fontsize=8)
        _save(fig, out / "feature_psi.png")
        made.append(out / "feature_psi.png")
    if "score" not in reference:  # a segmentation model's: its features are the whole report
        return made
    ref, cur = np.asarray(reference["score"]["counts"], float), np.asarray(report["score"]["counts"], float)
    if cur.sum() and ref.sum():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(ref))
        ax.bar(x - 0.2, ref / ref.sum(), width=0.4, label="reference (validation + test)")
        ax.bar(x + 0.2, cur / cur.sum(), width=0.4, label="batch")
        inner = reference["score"]["edges"]
        if "threshold" in reference["score"]:  # probabilities
            edges, what = [0.0, *inner, 1.0], "model score"
        else:  # a regression's predictions, in the target's units: the outer bins are open
            edges, what = [-np.inf, *inner, np.inf], "prediction"
        ax.set_xticks(x, [f"{a:.3g}-{b:.3g}" for a, b in zip(edges[:-1], edges[1:], strict=True)], fontsize=7)
        ax.set(xlabel=what, ylabel="share of rows", title=f"{what.capitalize()} distribution")
        ax.legend(fontsize=8)
        _save(fig, out / "score.png")
        made.append(out / "score.png")
    return made


def write(report: dict, reference: dict, out: Path) -> Path:
    """report.json, report.md and plots/ in out; returns out."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    plots(report, reference, out / "plots")
    return out
