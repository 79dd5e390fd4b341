"""`train.model: xgboost`: gradient-boosted trees trained by the train step like the networks, on the same
preprocessed features and the task's own learning targets (a regression's standardised on the train split, a
survival table's time and event as XGBoost's Cox label): stopped after train.patience rounds without a lower
validation loss, one progress line and one MLflow row per boosting round (train_loss, val_loss and the task's
val_<score>: accuracy, MAE in the target's units, Harrell's C), balanced class weights when train.class_weights
asks for them."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import xgboost as xgb

from medflow.models import trees
from medflow.params import TrainParams
from medflow.training.loop import FitResult, Progress
from medflow.training.settings import balanced_weights, cpu_threads


def settings(p: TrainParams) -> trees.TreeSettings:
    return trees.TreeSettings(
        n_estimators=p.n_estimators,
        early_stopping_rounds=p.patience,
        max_depth=p.max_depth,
        learning_rate=p.learning_rate,
        min_child_weight=p.min_child_weight,
        subsample=p.subsample,
        colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda,
        threads=cpu_threads(p, 1),
    )


Scores = Callable[[xgb.Booster, dict], dict[str, float]]


class _Rounds(xgb.callback.TrainingCallback):
    """Each round's losses and the task's scores as a history row, handed to on_round and the progress line as an
    epoch's are."""

    def __init__(self, task: str, rows: int, scores: Scores, on_round, progress: Progress | None):
        super().__init__()
        self.loss = trees.EVAL_METRICS[task][-1]
        self.rows, self.scores, self.on_round, self.progress = rows, scores, on_round, progress
        self.history: list[dict[str, float]] = []
        self.last = time.perf_counter()

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        if self.progress:
            self.progress.start()
        self.last = time.perf_counter()
        return model

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        row = {
            "train_loss": float(evals_log["train"][self.loss][-1]),
            "val_loss": float(evals_log["val"][self.loss][-1]),
            **self.scores(model, evals_log),
        }
        now = time.perf_counter()
        row["rows_per_s"] = self.rows / max(now - self.last, 1e-9)
        self.last = now
        self.history.append(row)
        self.on_round(len(self.history), row)
        if self.progress:
            self.progress.update(len(self.history), row, self.best)
        return False

    @property
    def best(self) -> int:
        return 1 + int(np.argmin([r["val_loss"] for r in self.history]))


def _scores(task: str, x_val: np.ndarray, y_val: np.ndarray, scale: dict | None) -> Scores:
    """The task's per-round score, named as the network loop names its epoch's."""
    if task in ("binary", "multiclass"):
        error = trees.EVAL_METRICS[task][0]
        return lambda model, log: {"val_accuracy": 1.0 - float(log["val"][error][-1])}
    if task == "cox":
        from medflow.evaluation.survival import harrell_c

        val = xgb.DMatrix(x_val)
        time, event = y_val[:, 0].astype(float), y_val[:, 1] > 0
        return lambda model, log: {"val_c_index": harrell_c(time, event, model.predict(val, output_margin=True))}
    std = scale["std"] if scale else 1.0  # the target was standardised: MAE back in its units
    return lambda model, log: {
        "train_mae": float(log["train"]["mae"][-1]) * std,
        "val_mae": float(log["val"]["mae"][-1]) * std,
    }


def fit_trees(
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    task: str,
    n_classes: int,
    p: TrainParams,
    seed: int,
    on_round: Callable[[int, dict], None],
    progress: Progress | None = None,
    scale: dict | None = None,
) -> tuple[trees.TreeModel, FitResult]:
    """x, y: the train and val splits' features (as the bundle's preprocessing gives them) and learning targets
    (class indices, a standardised target with its scale, or (time, event) rows); task: the tree objective the
    medflow task asks for (tasks/ tree_objective)."""
    tree = settings(p)
    weight = None
    if p.class_weights == "balanced" and task in ("binary", "multiclass"):
        weight = np.asarray(balanced_weights(y["train"], n_classes))[y["train"]]
    label = {s: trees.cox_label(v[:, 0], v[:, 1]) if task == "cox" else v for s, v in y.items()}
    rounds = _Rounds(task, len(y["train"]), _scores(task, x["val"], y["val"], scale), on_round, progress)
    booster = trees.fit(
        x["train"],
        label["train"],
        x["val"],
        label["val"],
        task,
        tree,
        seed,
        n_classes,
        weight=weight,
        callbacks=[rounds],
        watch_train=True,
    )
    best = booster.num_boosted_rounds()
    if progress:
        progress.close(len(rounds.history), rounds.history[-1], best, len(rounds.history) < p.n_estimators)
    result = FitResult(best, rounds.history[best - 1]["val_loss"], len(rounds.history), rounds.history)
    return trees.TreeModel(booster, task, tree), result
