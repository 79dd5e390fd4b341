"""Evaluation figures, drawn from aggregates of the test split only (curve points, counts, bin means), never a row.

The aggregates are computed in the evaluate step (sklearn's curves) and handed to the drawing functions, which need
numpy and matplotlib alone (the Agg backend, imported at the first figure): a figure never sees a patient's score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)


def _curves(y: np.ndarray, proba: np.ndarray, classes: list[str]):
    """The positive class for binary; one-vs-rest per class for multiclass; classes absent from y are skipped."""
    pairs = (
        [(classes[1], y == 1, proba[:, 1])]
        if len(classes) == 2
        else [(c, y == i, proba[:, i]) for i, c in enumerate(classes)]
    )
    return [(name, truth, score) for name, truth, score in pairs if truth.any() and not truth.all()]


def roc_curves(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[dict]:
    """Per curve of `_curves`: its name, sklearn's ROC points and AUC."""
    from sklearn import metrics as skm

    curves = []
    for name, truth, score in _curves(y, proba, classes):
        fpr, tpr, _ = skm.roc_curve(truth, score)
        curves.append({"name": name, "fpr": fpr, "tpr": tpr, "auc": float(skm.auc(fpr, tpr))})
    return curves


def pr_curves(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[dict]:
    """Per curve: its name, sklearn's precision-recall points, average precision and the share of positives."""
    from sklearn import metrics as skm

    curves = []
    for name, truth, score in _curves(y, proba, classes):
        precision, recall, _ = skm.precision_recall_curve(truth, score)
        ap = float(skm.average_precision_score(truth, score))
        curves.append({"name": name, "precision": precision, "recall": recall, "ap": ap, "prevalence": truth.mean()})
    return curves


def confusion_counts(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts over every class, absent ones included."""
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def reliability_bins(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> dict:
    """conf: predicted probability (binary) or top-label confidence (multiclass); hit: the outcome it predicts.
    Per non-empty uniform bin, as sklearn's calibration_curve: the mean prediction and the observed share; and the
    rows of every bin."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(hit, conf, n_bins=n_bins)
    counts = np.bincount(np.minimum((conf * n_bins).astype(int), n_bins - 1), minlength=n_bins)
    return {"predicted": predicted, "observed": observed, "counts": counts}


def roc_points(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[dict]:
    return [
        {"class": c["name"], "fpr": float(f), "tpr": float(t)}
        for c in roc_curves(y, proba, classes)
        for f, t in zip(c["fpr"], c["tpr"], strict=True)
    ]


def plot_roc(curves: list[dict], out: Path, operating: tuple | None = None) -> None:
    """curves: roc_curves(); operating: (1 - specificity, sensitivity) at the chosen threshold, marked on the curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in curves:
        ax.plot(c["fpr"], c["tpr"], label=f"{c['name']} (AUC = {c['auc']:.2f})")
    ax.plot([0, 1], [0, 1], "k--", label="Chance level (AUC = 0.5)")
    if operating is not None:
        ax.plot(*operating, "o", color="crimson", label="chosen threshold")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ROC curve (test split)")
    _save(fig, out)


def plot_pr(curves: list[dict], out: Path, chance: bool) -> None:
    """curves: pr_curves(); chance: draw the positives' share (a binary task's no-skill precision)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in curves:
        ax.plot(c["recall"], c["precision"], drawstyle="steps-post", label=f"{c['name']} (AP = {c['ap']:.2f})")
        if chance:
            ax.axhline(c["prevalence"], ls="--", color="k", label=f"Chance level (AP = {c['prevalence']:.2f})")
    ax.set(xlim=(-0.01, 1.01), aspect="equal")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Precision-recall curve (test split)")
    _save(fig, out)


def plot_confusion(counts: np.ndarray, classes: list[str], out: Path, title: str) -> None:
    """counts: confusion_counts()."""
    plt = _pyplot()
    side = 1.0 * len(classes) + 3
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(counts, cmap="Blues", vmin=0)
    dark = counts.max() / 2
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > dark else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes)
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    _save(fig, out)


def plot_reliability(bins: dict, out: Path, label: str) -> None:
    """bins: reliability_bins()."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5.5))
    ax.plot([0, 1], [0, 1], "k:", label="Perfectly calibrated")
    ax.plot(bins["predicted"], bins["observed"], "s-", label="model")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    n_bins = len(bins["counts"])
    twin = ax.twinx()
    twin.bar((np.arange(n_bins) + 0.5) / n_bins, bins["counts"], width=1 / n_bins, alpha=0.15, color="grey")
    twin.set_ylabel("rows per bin")
    ax.set(xlabel=f"mean predicted {label}", ylabel=f"observed fraction ({label})")
    ax.set_title("Reliability diagram (test split)")
    _save(fig, out)


def prediction_bins(y: np.ndarray, pred: np.ndarray, n_bins: int = 10, min_rows: int = 5) -> dict[str, list[float]]:
    """A regression's test rows in bins of equal size by prediction (fewer bins when rows are few, none under
    min_rows rows): each bin's mean prediction, mean observed value, mean residual (observed - predicted) and its
    standard deviation. Bins, not points: a scatter would draw each patient's outcome."""
    order = np.argsort(pred, kind="stable")
    k = max(1, min(n_bins, len(y) // min_rows))
    parts = [p for p in np.array_split(order, k) if len(p)]
    residual = y - pred
    return {
        "predicted": [float(pred[p].mean()) for p in parts],
        "observed": [float(y[p].mean()) for p in parts],
        "residual": [float(residual[p].mean()) for p in parts],
        "residual_sd": [float(residual[p].std()) for p in parts],
        "counts": [len(p) for p in parts],
    }


def plot_predicted_observed(bins: dict, out: Path, target: str) -> None:
    """bins: prediction_bins(); the diagonal is a model whose predictions are right on average in every bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    lo = min(bins["predicted"] + bins["observed"])
    hi = max(bins["predicted"] + bins["observed"])
    ax.plot([lo, hi], [lo, hi], "k:", label="observed = predicted")
    ax.plot(bins["predicted"], bins["observed"], "s-", label="model (bins of test rows by prediction)")
    ax.set(xlabel=f"mean predicted {target}", ylabel=f"mean observed {target}")
    ax.set_title("Predicted vs observed (test split)")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, out)


def plot_residuals(bins: dict, out: Path, target: str) -> None:
    """bins: prediction_bins(); each bin's mean residual with one standard deviation either side."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(0, color="k", ls=":")
    ax.errorbar(bins["predicted"], bins["residual"], yerr=bins["residual_sd"], fmt="o", capsize=3)
    ax.set(xlabel=f"mean predicted {target}", ylabel="observed - predicted (mean ± 1 sd)")
    ax.set_title("Residuals by predicted value (test split)")
    _save(fig, out)


def plot_learning_curves(
    history: dict[str, list[tuple[int, float]]], out: Path, best_epoch: int | None, score: str = "accuracy"
) -> None:
    """history: metric name -> (epoch, value), as train logged them: losses left, the task's score (accuracy, mae)
    right."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, kind in zip(axes, ("loss", score), strict=True):
        for split in ("train", "val"):
            points = history.get(f"{split}_{kind}", [])
            if points:
                ax.plot(*zip(*points, strict=True), label=split)
        if best_epoch:
            ax.axvline(best_epoch, ls="--", color="grey", lw=0.8, label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=kind, title=f"{kind} per epoch")
        ax.legend(fontsize=8)
    _save(fig, out)


def plot_forest(report: dict, out: Path, overall: float | None = None) -> None:
    """One line per group: the primary metric with its 95% CI; suppressed groups show "<k" patients and no value.

    overall: the whole test split's value, drawn as a reference line.
    """
    plt = _pyplot()
    primary, rows = report["primary_metric"], report["groups"]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        if primary in r:
            lo, hi = r[primary] - r[f"{primary}_ci_low"], r[f"{primary}_ci_high"] - r[primary]
            ax.errorbar(r[primary], i, xerr=[[lo], [hi]], fmt="o", color="navy", capsize=3)
        else:
            why = "suppressed: too few patients" if r["suppressed"] else f"{primary} undefined (one class)"
            ax.text(0.02, i, why, transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="grey")
    if overall is not None:
        ax.axvline(overall, ls="--", color="grey", lw=0.8, label=f"whole test split ({overall:.3f})")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(range(len(rows)), [f"{r['group']} ({r['patients']} patients)" for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set(xlabel=f"{primary} (95% patient-bootstrap CI)", title="Subgroups (test split)")
    _save(fig, out)


def plot_smoothed_calibration(curve: dict, fit: dict, out: Path, label: str) -> None:
    """curve: calibration.smoothed_curve(); fit: the calibration intercept and slope with their intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="Perfectly calibrated")
    ax.plot(curve["predicted"], curve["observed"], "-", label="model (LOWESS)")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel=f"predicted {label}", ylabel="observed rate (smoothed)")
    ax.text(
        0.98,
        0.03,
        f"intercept {fit['calibration_intercept']:.2f} [{fit['calibration_intercept_ci_low']:.2f}, "
        f"{fit['calibration_intercept_ci_high']:.2f}]\nslope {fit['calibration_slope']:.2f} "
        f"[{fit['calibration_slope_ci_low']:.2f}, {fit['calibration_slope_ci_high']:.2f}]",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Smoothed calibration curve (test split)")
    _save(fig, out)


def plot_decision_curve(table: list[dict], out: Path, operating: dict | None) -> None:
    """table: decision_curve.net_benefit(); operating: the chosen threshold's row, marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    t = [r["threshold"] for r in table]
    # A survival curve's net benefit is unknown (None) where follow-up ends before the horizon: a gap in the line.
    values = {k: np.array([np.nan if r[k] is None else r[k] for r in table], float) for k in ("model", "treat_all")}
    values["treat_none"] = np.array([r["treat_none"] for r in table], float)
    for key, style, name in (("model", "-", "model"), ("treat_all", "--", "treat all"), ("treat_none", ":", "none")):
        ax.plot(t, values[key], style, label=f"treat {name}" if key == "treat_none" else name)
    if operating:
        ax.plot([operating["threshold"]], [operating["model"]], "o", color="C3", label="operating point")
    top = np.nanmax([*values["model"], *([operating["model"]] if operating else []), 0.0])
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(min(-0.05, -top / 10), max(top, 0.01) * 1.1))
    ax.legend(fontsize=8)
    ax.set_title("Decision curve (test split)")
    _save(fig, out)


def plot_importance(importance: list[dict], out: Path, method: str, top: int = 15) -> None:
    """importance: explain.global_importance(), largest first; the top ones as horizontal bars."""
    plt = _pyplot()
    shown = importance[:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(shown) + 1.5))
    ax.barh([r["feature"] for r in shown], [r["mean_abs"] for r in shown])
    ax.set(xlabel="mean |contribution| to the log-odds (test split)")
    ax.set_title(f"Global explanation: {method.split(' (')[0]}", fontsize=9)
    _save(fig, out)


def plot_permutation(found: dict, out: Path, top: int = 15) -> None:
    """found: permutation.importance(), largest loss first; the top ones as horizontal bars with their 95% CIs."""
    plt = _pyplot()
    shown = found["features"][:top][::-1]
    drop = np.array([r["drop"] for r in shown])
    low, high = np.array([r["ci_low"] for r in shown]), np.array([r["ci_high"] for r in shown])
    # A percentile interval need not hold its point estimate: a whisker never crosses the bar's end.
    whiskers = np.clip([drop - low, high - drop], 0, None)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(shown) + 1.5))
    ax.barh([r["feature"] for r in shown], drop, xerr=whiskers, capsize=2)
    ax.axvline(0, color="black", linewidth=0.8)
    worse = "rise" if found["lower_is_better"] else "fall"
    ax.set(xlabel=f"{worse} of test {found['metric']} when the column is shuffled (95% CI)")
    ax.set_title(f"Permutation importance ({found['rows']} test rows)", fontsize=9)
    _save(fig, out)
