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


def _draw_intercepts(y: np.ndarray, lp: np.ndarray, w: np.ndarray) -> np.ndarray:
    """_intercept for each row of weights w at once: Newton's steps inside brentq's bracket [-50, 50], bisecting
    where a step leaves it (the score is monotone in a); NaN where the bracket holds no root."""
    from scipy.special import expit

    def score(a: np.ndarray) -> np.ndarray:
        return (w * (y - expit(a[:, None] + lp))).sum(axis=1)

    lo, hi = np.full(len(w), -50.0), np.full(len(w), 50.0)
    ok = (score(lo) > 0) & (score(hi) < 0)
    a, done = np.zeros(len(w)), ~ok
    for _ in range(200):
        p = expit(a[:, None] + lp)
        s, slope = (w * (y - p)).sum(axis=1), (w * p * (1 - p)).sum(axis=1)
        lo, hi = np.where(s > 0, a, lo), np.where(s > 0, hi, a)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = a + s / slope
        inside = np.isfinite(step) & (step >= lo) & (step <= hi)
        nxt = np.where(done, a, np.where(inside, step, (lo + hi) / 2))
        done |= np.abs(nxt - a) <= 1e-12 * (1 + np.abs(a))
        a = nxt
        if done.all():
            break
    return np.where(ok, a, np.nan)


def _draw_glms(y: np.ndarray, lp: np.ndarray, w: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """The binomial GLM of y on the logit, (intercept, slope), for each row of weights w at once, by Newton's steps
    on its (concave) log-likelihood, each halved until it does not fall: the maximum statsmodels' IRLS finds, from
    any start. It starts at the calibrated-in-the-large fit (intercept, slope 1); NaN where it does not converge."""
    from scipy.special import expit

    def loglik(b: np.ndarray, wl: np.ndarray) -> np.ndarray:
        eta = b[:, :1] + b[:, 1:] * lp
        return (wl * (y * eta - np.logaddexp(0, eta))).sum(axis=1)

    beta = np.column_stack([np.nan_to_num(intercepts), np.ones(len(w))])
    converged = np.zeros(len(w), dtype=bool)
    for _ in range(100):
        live = np.flatnonzero(~converged)
        if not len(live):
            break
        b, wl = beta[live], w[live]
        p = expit(b[:, :1] + b[:, 1:] * lp)
        r, v = wl * (y - p), wl * p * (1 - p)
        g0, g1 = r.sum(axis=1), (r * lp).sum(axis=1)
        h00, h01, h11 = v.sum(axis=1), (v * lp).sum(axis=1), (v * lp * lp).sum(axis=1)
        det = h00 * h11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.column_stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det])
        step[~np.isfinite(step).all(axis=1)] = 0
        before = loglik(b, wl)
        for _ in range(40):
            after = loglik(b + step, wl)
            worse = after < before
            if not worse.any():
                break
            step[worse] /= 2
        else:  # no step up the log-likelihood: this is its maximum, to rounding
            step[worse], after[worse] = 0, before[worse]
        beta[live] = b + step
        # statsmodels' criterion: the deviance (-2 log-likelihood) changed by at most 1e-8.
        converged[live] = np.abs(after - before) <= 5e-9
    return np.where(converged[:, None], beta, np.nan)


def _draw_fits(y: np.ndarray, lp: np.ndarray, w: np.ndarray) -> np.ndarray:
    """_fits of each bootstrap resample (a row of weights w) at once, as (resamples, [intercept, slope]): a thousand
    resamples cost one pass of vectorised steps instead of a thousand statsmodels fits."""
    both = ((w * y).sum(axis=1) > 0) & ((w * (1 - y)).sum(axis=1) > 0)
    separated = np.array([_separated(y, lp, row) for row in w], dtype=bool)
    out = np.full((len(w), 2), np.nan)
    if both.any():
        out[both, 0] = _draw_intercepts(y, lp, w[both])
    fit = both & ~separated
    if fit.any():
        out[fit, 1] = _draw_glms(y, lp, w[fit], out[fit, 0])[:, 1]
    return out


def logistic_calibration(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, n_boot: int, seed: int
) -> dict[str, float]:
    """Calibration intercept (0 is calibrated in the large; below 0, risks overestimated) and slope (1 is calibrated;
    below 1, predictions too extreme) of binary labels y on the predicted P(positive) p, with 95% percentile
    intervals over the same patient resamples as every other metric (those the logit separates left out, counted)."""
    from medflow.evaluation.metrics import interval, resample_weights

    lp = _logit(p)
    y = np.asarray(y, dtype=float)
    intercept, slope = _fits(y, lp, None)
    chunks = [_draw_fits(y, lp, w) for w in resample_weights(groups, len(y), n_boot, seed)]
    draws = np.concatenate(chunks) if chunks else np.empty((0, 2))
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
