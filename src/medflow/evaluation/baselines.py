"""Simple baselines a first champion must not lose to. Classification: the majority class and a regularised logistic
regression; regression (regression_baselines): the training mean, ridge regression and gradient-boosted trees.

All are fitted on the train split only. Tables reach the linear and tree models through the model's own fitted
preprocessing (imputation, scaling, one-hot), so the comparison is about the model, not the features; images reach
it as flattened pixels scaled to [0, 1] (a linear probe).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

# A linear probe on many images costs minutes of CPU; this many training rows already pin it down.
MAX_PROBE_ROWS = 5000


def _full_proba(model: LogisticRegression, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns for every class, zero for a class the train split lacked (sklearn returns only the seen ones)."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def baseline_proba(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Test probabilities (rows x classes) of each baseline; x_*: features as the model sees them, y: class indices."""
    prior = np.bincount(y_train, minlength=n_classes) / max(len(y_train), 1)
    out = {"majority_class": np.tile(prior, (len(x_test), 1))}
    if len(np.unique(y_train)) < 2:
        return out  # nothing to regress on: the majority class is the only baseline
    if len(x_train) > MAX_PROBE_ROWS:
        keep = np.random.default_rng(seed).choice(len(x_train), MAX_PROBE_ROWS, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x_train, y_train)
    out["logistic_regression"] = _full_proba(model, x_test, n_classes)
    return out


def flat_pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def regression_baselines(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """Test predictions (rows x 1, the target's units) of the training mean, a ridge regression and gradient-boosted
    trees (scikit-learn's histogram GBM with its defaults and early stopping off, so the fit is deterministic)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    y_train = np.asarray(y_train, dtype=float)
    out = {"training_mean": np.full((len(x_test), 1), y_train.mean() if len(y_train) else np.nan)}
    if len(x_train) < 2:
        return out
    out["ridge"] = Ridge(alpha=1.0).fit(x_train, y_train).predict(x_test)[:, None]
    trees = HistGradientBoostingRegressor(early_stopping=False, random_state=seed).fit(x_train, y_train)
    out["gradient_boosted_trees"] = trees.predict(x_test)[:, None]
    return out


def survival_baselines(
    x_train: np.ndarray, time: np.ndarray, event: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """Test risk scores (rows x 1, higher = earlier event) of a Cox proportional-hazards model with a small ridge
    penalty (scikit-survival's, Efron ties: one-hot and missing-indicator columns are collinear without it) and of
    gradient-boosted trees on the Cox partial likelihood (scikit-survival's, its defaults)."""
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from medflow.evaluation.survival import surv

    y = surv(time, event)
    cox = CoxPHSurvivalAnalysis(alpha=0.1, ties="efron").fit(x_train, y)
    trees = GradientBoostingSurvivalAnalysis(random_state=seed).fit(x_train, y)
    return {"cox": cox.predict(x_test)[:, None], "gradient_boosted_trees": trees.predict(x_test)[:, None]}
