"""Simple baselines a first champion must not lose to, per task, and on tables gradient-boosted trees (XGBoost: the
model a tabular deep net must beat). Classification: the majority class, a regularised logistic regression;
regression (regression_baselines): the training mean, ridge regression; survival (survival_baselines): a Cox
proportional-hazards model.

All are fitted on the train split only (the trees stop early on the validation split). Tables reach the logistic
regression and the trees through the model's own fitted preprocessing (imputation, scaling, one-hot), so the
comparison is about the model, not the features; images reach the logistic regression as flattened pixels scaled
to [0, 1] (a linear probe), read from the image store: a seeded sample of training images and the test images a
chunk at a time, so that the gate of a set larger than memory stays within train.memory_budget_mb.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from medflow.data.image_store import ImageStore
from medflow.models import trees

# A linear probe on many images costs minutes of CPU; this many training rows already pin it down.
MAX_PROBE_ROWS = 5000


@dataclass(frozen=True)
class TreeBaseline:
    """What the gradient-boosted-tree baseline needs besides the training split: the validation split it stops
    early on (features, and the outcome as the task's baselines take it), its settings and the most training rows
    it is fitted on."""

    val: tuple[np.ndarray, np.ndarray]
    settings: trees.TreeSettings
    max_rows: int = 100_000

    def fit_predict(self, x_train, y_train, x_test, task: str, seed: int, n_classes: int | None = None) -> np.ndarray:
        """Test outputs of trees fitted on at most max_rows training rows: probabilities (rows x classes) for classes,
        else one column (values; cox: the risk score). y_train and val's outcome as the objective reads them."""
        booster = trees.fit(
            *_rows(x_train, y_train, self.max_rows, seed), *self.val, task, self.settings, seed, n_classes
        )
        out = np.asarray(trees.predict(booster, x_test, task), dtype=float)
        return out if out.ndim == 2 else out[:, None]


def _full_proba(model: LogisticRegression, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns for every class, zero for a class the train split lacked (sklearn returns only the seen ones)."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _rows(x: np.ndarray, y: np.ndarray, most: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= most:
        return x, y
    keep = np.random.default_rng(seed).choice(len(x), most, replace=False)
    return x[keep], y[keep]


def _pixels(store: ImageStore, rows: np.ndarray, chunk_rows: int):
    """Flattened pixels of store rows `rows` (any order), chunk_rows images at a time, with the positions in `rows`
    each chunk answers for."""
    order = np.argsort(rows, kind="stable")
    done = 0
    for chunk in store.scan(rows[order], chunk_rows):
        yield order[done : done + len(chunk)], flat_pixels(chunk)
        done += len(chunk)


def image_baselines(
    store: ImageStore,
    train_rows: np.ndarray,
    y_train: np.ndarray,
    test_rows: np.ndarray,
    n_classes: int,
    seed: int,
    probe_rows: int,
    chunk_rows: int,
) -> tuple[dict[str, np.ndarray], int]:
    """baseline_proba's majority class and linear probe for images, by store row: the prior from every training
    label, the probe fitted on at most probe_rows seeded training images, the test images scored chunk_rows at a
    time. Also returns how many training images the probe was fitted on (0: no probe)."""
    prior = np.bincount(y_train, minlength=n_classes) / max(len(y_train), 1)
    out = {"majority_class": np.tile(prior, (len(test_rows), 1))}
    if len(np.unique(y_train)) < 2:
        return out, 0
    keep = np.arange(len(train_rows))
    if len(keep) > probe_rows:
        keep = np.random.default_rng(seed).choice(len(keep), probe_rows, replace=False)
    x_probe = np.empty((len(keep), int(np.prod(store.shape))), dtype=np.float32)
    for at, x in _pixels(store, train_rows[keep], chunk_rows):
        x_probe[at] = x
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x_probe, y_train[keep])
    del x_probe
    proba = np.zeros((len(test_rows), n_classes))
    for at, x in _pixels(store, test_rows, chunk_rows):
        proba[at] = _full_proba(model, x, n_classes)
    out["logistic_regression"] = proba
    return out, len(keep)


def baseline_proba(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    seed: int = 0,
    tree: TreeBaseline | None = None,
) -> dict[str, np.ndarray]:
    """Test probabilities (rows x classes) of each baseline; x_*: features as the model sees them, y: class indices.
    tree (its val: features and class indices): the gradient-boosted trees too."""
    prior = np.bincount(y_train, minlength=n_classes) / max(len(y_train), 1)
    out = {"majority_class": np.tile(prior, (len(x_test), 1))}
    if len(np.unique(y_train)) < 2:
        return out  # nothing to regress on: the majority class is the only baseline
    x_probe, y_probe = _rows(x_train, y_train, MAX_PROBE_ROWS, seed)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x_probe, y_probe)
    out["logistic_regression"] = _full_proba(model, x_test, n_classes)
    if tree is not None:
        task = trees.classification_objective(n_classes)
        out["gradient_boosted_trees"] = tree.fit_predict(x_train, y_train, x_test, task, seed, n_classes)
    return out


def flat_pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def regression_baselines(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seed: int = 0,
    tree: TreeBaseline | None = None,
) -> dict[str, np.ndarray]:
    """Test predictions (rows x 1, the target's units) of the training mean, a ridge regression and, given tree
    (its val: features and values), gradient-boosted trees on squared error."""
    from sklearn.linear_model import Ridge

    y_train = np.asarray(y_train, dtype=float)
    out = {"training_mean": np.full((len(x_test), 1), y_train.mean() if len(y_train) else np.nan)}
    if len(x_train) < 2:
        return out
    out["ridge"] = Ridge(alpha=1.0).fit(x_train, y_train).predict(x_test)[:, None]
    if tree is not None:
        tree = replace(tree, val=(tree.val[0], np.asarray(tree.val[1], dtype=float)))
        out["gradient_boosted_trees"] = tree.fit_predict(x_train, y_train, x_test, "regression", seed)
    return out


def survival_baselines(
    x_train: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    x_test: np.ndarray,
    seed: int = 0,
    tree: TreeBaseline | None = None,
) -> dict[str, np.ndarray]:
    """Test risk scores (rows x 1, higher = earlier event) of a Cox proportional-hazards model with a small ridge
    penalty (scikit-survival's, Efron ties: one-hot and missing-indicator columns are collinear without it) and,
    given tree (its val: features and (rows, 2) time and event), gradient-boosted trees on the Cox partial
    likelihood (XGBoost's survival:cox)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from medflow.evaluation.survival import surv

    cox = CoxPHSurvivalAnalysis(alpha=0.1, ties="efron").fit(x_train, surv(time, event))
    out = {"cox": cox.predict(x_test)[:, None]}
    if tree is not None:
        tree = replace(tree, val=(tree.val[0], trees.cox_label(tree.val[1][:, 0], tree.val[1][:, 1])))
        out["gradient_boosted_trees"] = tree.fit_predict(x_train, trees.cox_label(time, event), x_test, "cox", seed)
    return out
