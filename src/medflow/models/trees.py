"""Gradient-boosted trees (XGBoost), thinly wrapped: one function fits any tabular task's objective with early
stopping on the validation split, one scores it.

XGBoost rather than LightGBM: one library covers every outcome medflow has or will have, classes (binary and
multiclass), continuous targets (squared error, pseudo-Huber) and time-to-event with censoring (`survival:cox`,
`survival:aft`); LightGBM has no survival objective. Trees are fitted on the features as the bundle's fitted
Preprocessor gives them (imputed, scaled, one-hot), the very matrix every other model and baseline sees, so a
comparison between them is about the model alone and a tree model scores through the same row checks.

Deterministic under the seed: a fixed `seed`, a fixed thread count and the `hist` method give the same trees on
the same data, run after run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where trees are fitted or scored (~1 s): a torch model's bundle never pays for it
    import xgboost as xgb

# task -> XGBoost objective; the seam's tasks ask for theirs by name.
OBJECTIVES = {
    "binary": "binary:logistic",
    "multiclass": "multi:softprob",
    "regression": "reg:squarederror",
    "huber": "reg:pseudohubererror",
    "cox": "survival:cox",
}
# Validation metrics per round; early stopping reads the last (the loss), a progress line the first too.
EVAL_METRICS = {
    "binary": ["error", "logloss"],
    "multiclass": ["merror", "mlogloss"],
    "regression": ["mae", "rmse"],
    "huber": ["mae", "mphe"],
    "cox": ["cox-nloglik"],
}
BOOSTER_FILE = "trees.json"  # XGBoost's own JSON format in the bundle, never a pickle


@dataclass(frozen=True)
class TreeSettings:
    """The key parameters of the boosting (XGBoost's names)."""

    n_estimators: int = 300  # most boosting rounds; early stopping usually ends sooner
    early_stopping_rounds: int = 20  # rounds without a better validation loss before stopping
    max_depth: int = 4
    learning_rate: float = 0.1
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    threads: int = 1


def classification_objective(n_classes: int) -> str:
    return "binary" if n_classes <= 2 else "multiclass"


def cox_label(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """`survival:cox` reads one label: the time, negated when the patient was censored (no event)."""
    time = np.asarray(time, dtype=float)
    return np.where(np.asarray(event).astype(bool), time, -time)


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    settings: TreeSettings,
    seed: int,
    n_classes: int | None = None,
    *,
    weight: np.ndarray | None = None,
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
    watch_train: bool = False,
) -> xgb.Booster:
    """The booster cut at its best validation round. y: class indices (binary, multiclass; n_classes for the
    latter), values (regression, huber) or cox_label (cox); weight: per training row; callbacks see each round's
    validation metrics (EVAL_METRICS[task]), and the training split's too when watch_train."""
    import xgboost as xgb

    if task not in OBJECTIVES:
        raise ValueError(f"tree objective {task!r} is not one of {', '.join(OBJECTIVES)}")
    config = {
        "objective": OBJECTIVES[task],
        "tree_method": "hist",
        "max_depth": settings.max_depth,
        "eta": settings.learning_rate,
        "min_child_weight": settings.min_child_weight,
        "subsample": settings.subsample,
        "colsample_bytree": settings.colsample_bytree,
        "lambda": settings.reg_lambda,
        "seed": seed,
        "nthread": settings.threads,
        "verbosity": 0,
    }
    if task == "multiclass":
        config["num_class"] = n_classes
    if task in EVAL_METRICS:
        config["eval_metric"] = EVAL_METRICS[task]
    train = xgb.DMatrix(x_train, label=y_train, weight=weight, nthread=settings.threads)
    val = xgb.DMatrix(x_val, label=y_val, nthread=settings.threads)
    booster = xgb.train(
        config,
        train,
        num_boost_round=settings.n_estimators,
        evals=[(train, "train"), (val, "val")] if watch_train else [(val, "val")],
        early_stopping_rounds=settings.early_stopping_rounds,
        verbose_eval=False,
        callbacks=list(callbacks),
    )
    # Saved and scored as the best round's model, so no caller has to remember iteration_range.
    return booster[: booster.best_iteration + 1]


def predict(booster: xgb.Booster, x: np.ndarray, task: str) -> np.ndarray:
    """binary and multiclass: probabilities (rows x classes); regression, huber: values; cox: the risk score, the
    log of the hazard ratio (XGBoost's margin), as a Cox model's linear predictor and Breslow's baseline read it."""
    import xgboost as xgb

    out = booster.predict(xgb.DMatrix(x), output_margin=task == "cox")
    if task == "binary":
        return np.column_stack([1.0 - out, out])
    return out


class TreeModel:
    """A fitted booster and its task, as a model bundle holds them: BOOSTER_FILE beside model.json."""

    def __init__(self, booster: xgb.Booster, task: str, settings: TreeSettings):
        self.booster, self.task, self.settings = booster, task, settings

    def config(self, name: str, n_classes: int) -> dict:
        return {"name": name, "task": self.task, "n_classes": n_classes, **asdict(self.settings)}

    def save(self, out: Path) -> None:
        self.booster.save_model(out / BOOSTER_FILE)

    @classmethod
    def load(cls, bundle: Path, config: dict) -> TreeModel:
        import xgboost as xgb

        fields = {k: config[k] for k in TreeSettings.__dataclass_fields__ if k in config}
        booster = xgb.Booster(model_file=bundle / BOOSTER_FILE)
        booster.set_param({"nthread": fields.get("threads", 1)})
        return cls(booster, config["task"], TreeSettings(**fields))

    def proba(self, x: np.ndarray) -> np.ndarray:
        return predict(self.booster, x, self.task)
