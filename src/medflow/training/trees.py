"""`train.model: xgboost`: gradient-boosted trees trained by the train step like the networks, on the same
preprocessed features: stopped after train.patience rounds without a lower validation loss, one progress line
and one MLflow row per boosting round (train_loss, val_loss, val_accuracy), balanced class weights when
train.class_weights asks for them."""

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


class _Rounds(xgb.callback.TrainingCallback):
    """Each round's losses as a history row, handed to on_round and the progress line as an epoch's are."""

    def __init__(self, task: str, rows: int, on_round: Callable[[int, dict], None], progress: Progress | None):
        super().__init__()
        self.error, self.loss = trees.EVAL_METRICS[task]
        self.rows, self.on_round, self.progress = rows, on_round, progress
        self.history: list[dict[str, float]] = []
        self.last = time.perf_counter()

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        if self.progress:
            self.progress.start()
        self.last = time.perf_counter()
        return model

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        now = time.perf_counter()
        row = {
            "train_loss": float(evals_log["train"][self.loss][-1]),
            "val_loss": float(evals_log["val"][self.loss][-1]),
            "val_accuracy": 1.0 - float(evals_log["val"][self.error][-1]),
            "rows_per_s": self.rows / max(now - self.last, 1e-9),
        }
        self.last = now
        self.history.append(row)
        self.on_round(len(self.history), row)
        if self.progress:
            self.progress.update(len(self.history), row, self.best)
        return False

    @property
    def best(self) -> int:
        return 1 + int(np.argmin([r["val_loss"] for r in self.history]))


def fit_trees(
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    n_classes: int,
    p: TrainParams,
    seed: int,
    on_round: Callable[[int, dict], None],
    progress: Progress | None = None,
) -> tuple[trees.TreeModel, FitResult]:
    """x, y: the train and val splits' features (as the bundle's preprocessing gives them) and class indices."""
    task = trees.classification_objective(n_classes)
    tree = settings(p)
    weight = None
    if p.class_weights == "balanced":
        weight = np.asarray(balanced_weights(y["train"], n_classes))[y["train"]]
    rounds = _Rounds(task, len(y["train"]), on_round, progress)
    booster = trees.fit(
        x["train"],
        y["train"],
        x["val"],
        y["val"],
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
