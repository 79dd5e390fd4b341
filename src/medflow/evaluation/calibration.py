"""Temperature scaling: one scalar T fitted on the validation split, probabilities softmax(log p / T).

It changes confidence, never the ranking (ROC-AUC and argmax stay as they are), so it is reported as a
diagnostic of how much of the calibration error one parameter removes.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from medflow.models.recalibration import FLOOR as _FLOOR
from medflow.models.recalibration import logit as _logit


def fit_temperature(y: np.ndarray, proba: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the validation negative log-likelihood."""
    logits = np.log(np.clip(proba, _FLOOR, 1))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded").x))


def _separated(y: np.ndarray, lp: np.ndarray, w: np.ndarray | None) -> bool:
    """Whether the logit separates the (weighted-in) outcomes: then no finite slope fits them."""
    if w is not None:
        y, lp = y[w > 0], lp[w > 0]
    pos, neg = lp[y == 1], lp[y == 0]
    return not len(pos) or not len(neg) or pos.min() > neg.max() or neg.min() > pos.max()


def _intercept(y: np.ndarray, lp: np.ndarray, w: np.ndarray) -> float:
    """Calibration-in-the-large: the a solving sum w (y - sigmoid(a + logit)) = 0, the binomial GLM's score equation
    with the logit as offset, by scipy's brentq (IRLS diverges on the offsets of probabilities of exactly 0 or 1)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    def score(a: float) -> float:
        return float(np.dot(w, y - expit(a + lp)))

    lo, hi = -50.0, 50.0
    return brentq(score, lo, hi, xtol=1e-10) if score(lo) > 0 > score(hi) else float("nan")


def _fits(y: np.ndarray, lp: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
    """Calibration-in-the-large (the intercept with the slope fixed at 1) and the calibration slope (of y on the
    logit, a statsmodels binomial GLM); NaN where a fit has no finite answer: a resample the logit separates (as a
    near-perfect model's often are) has no slope, one with one class neither."""
    import warnings

    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    weights = np.ones(len(y)) if w is None else w
    present = y[weights > 0]
    if present.min() == present.max():
        return float("nan"), float("nan")
    intercept = _intercept(y, lp, weights)
    if _separated(y, lp, w):
        return intercept, float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        x = np.column_stack([np.ones(len(y)), lp])
        try:
            fit = sm.GLM(y, x, family=sm.families.Binomial(), freq_weights=w).fit()
        except (ValueError, np.linalg.LinAlgError, PerfectSeparationWarning, ConvergenceWarning):
            return intercept, float("nan")
    slope = float(fit.params[1])
    return intercept, slope if fit.converged and np.isfinite(slope) else float("nan")


def logistic_calibration(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, n_boot: int, seed: int
) -> dict[str, float]:
    """Calibration intercept (0 is calibrated in the large; below 0, risks overestimated) and slope (1 is calibrated;
    below 1, predictions too extreme) of binary labels y on the predicted P(positive) p, with 95% percentile
    intervals over the same patient resamples as every other metric (those the logit separates left out, counted)."""
    from medflow.evaluation.metrics import interval, resample_weights

    lp = _logit(p)
    intercept, slope = _fits(y, lp, None)
    draws = np.array([_fits(y, lp, w) for chunk in resample_weights(groups, len(y), n_boot, seed) for w in chunk])
    (i_lo, i_hi), (s_lo, s_hi) = interval(draws[:, 0]), interval(draws[:, 1])
    return {
        # Resamples without a finite fit are left out of the intervals, as resamples missing a class are elsewhere.
        "resamples_without_fit": int(np.isnan(draws).any(axis=1).sum()),
        "calibration_intercept": intercept,
        "calibration_intercept_ci_low": i_lo,
        "calibration_intercept_ci_high": i_hi,
        "calibration_slope": slope,
        "calibration_slope_ci_low": s_lo,
        "calibration_slope_ci_high": s_hi,
    }


def smoothed_curve(y: np.ndarray, p: np.ndarray, points: int = 50) -> dict[str, list[float]]:
    """The observed rate as a smooth function of the predicted probability (statsmodels' LOWESS, frac 2/3 as the
    calibration literature's loess): its value at `points` probabilities spanning the predictions' 1st to 99th
    percentile, an aggregate of the neighbourhood of each, never a row."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    grid = np.linspace(*np.quantile(p, [0.01, 0.99]), points)
    observed = np.clip(lowess(y.astype(float), p, frac=2 / 3, it=0, xvals=grid), 0, 1)
    return {"predicted": grid.round(4).tolist(), "observed": observed.round(4).tolist()}


def fit_recalibration(method: str, y: np.ndarray, proba: np.ndarray) -> dict:
    """train.recalibrate, fitted on the validation split: temperature (any number of classes; T as fit_temperature)
    or logistic (binary: P' = sigmoid(intercept + slope * logit P), Platt's fit by statsmodels' binomial GLM)."""
    if method == "temperature":
        return {"method": method, "temperature": fit_temperature(y, proba)}
    if proba.shape[1] != 2:
        raise ValueError(
            f"train.recalibrate=logistic: the target has {proba.shape[1]} classes; rule: logistic recalibration is "
            "binary, use temperature"
        )
    import statsmodels.api as sm

    lp = _logit(proba[:, 1])
    fit = sm.GLM(y, np.column_stack([np.ones(len(y)), lp]), family=sm.families.Binomial()).fit()
    return {"method": method, "intercept": float(fit.params[0]), "slope": float(fit.params[1])}
