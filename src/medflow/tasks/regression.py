"""Regression: the target is a number (text-coded numbers and units read as for features). The network has one
output, trained by MSE or Huber loss on the target standardised on the training split, and predicts in the target's
units; MAE (the default primary), RMSE and R² with calibration-in-the-large and slope measure it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medflow.params import Params, ParamsError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from medflow.data.features import Schema


class Regression:
    name = "regression"
    # metric -> higher is better. Calibration-in-the-large (mean observed - mean predicted, ideally 0) and the
    # calibration slope (ideally 1) are reported, never a primary: neither has a better side.
    direction = {"mae": False, "rmse": False, "r2": True}
    primaries = ("mae", "rmse", "r2")
    has_classes = False  # LABEL is the target itself, a float
    epoch_metric = "mae"  # train_mae, val_mae, in the target's units

    def check_params(self, params: Params) -> None:
        primary = params.evaluate.primary_metric
        if primary not in self.primaries:
            raise ParamsError(
                f"evaluate.primary_metric={primary!r} is a {'survival' if primary == 'c_index' else 'classification'} "
                "metric; regression takes one of "
                f"{', '.join(self.primaries)} (mae when unset)"
            )
        if params.data.kind != "tabular":
            raise ParamsError("data.task=regression takes a table (data.kind=tabular)")
        if params.data.positive_class is not None:
            raise ParamsError("data.positive_class names a class; a regression target has none: set it to null")
        if params.tune.metric not in ("val_loss", f"val_{self.epoch_metric}"):
            other = "survival model's" if params.tune.metric == "val_c_index" else "classifier's"
            raise ParamsError(f"tune.metric={params.tune.metric} is a {other}; regression tunes val_loss or val_mae")
        mixup = params.tune.space.get("mixup")
        if params.train.mixup > 0 or (mixup and (mixup.choices or [0]) != [0]) or (mixup and mixup.high):
            raise ParamsError(
                "train.mixup mixes class labels: a regression takes train.mixup=0, and no tune.space.mixup"
            )

    def learning_targets(self, y: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict | None]:
        """Each split's target standardised by the training split's mean and standard deviation (so one learning
        rate suits a target in any units), and that scale, which reads the network's output in the target's units."""
        import torch

        mean, std = float(y["train"].mean()), float(y["train"].std()) or 1.0
        scaled = {s: torch.from_numpy(((v - mean) / std).astype("float32")) for s, v in y.items()}
        return scaled, {"mean": mean, "std": std}

    def higher_is_better(self, metric: str) -> bool:
        return self.direction[metric]

    def head_width(self, schema: Schema) -> int:
        return 1

    def loss(self, cfg, device):
        """cfg: the loop's FitConfig (train.loss)."""
        import torch

        inner = torch.nn.HuberLoss() if cfg.loss == "huber" else torch.nn.MSELoss()
        return lambda out, y: inner(out[:, 0], y)

    def loss_sum(self, cfg, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Validation loss summed over a batch, on the standardised target."""
        import torch.nn.functional as F

        if cfg.loss == "huber":
            return F.huber_loss(out[:, 0], y, reduction="sum")
        return F.mse_loss(out[:, 0], y, reduction="sum")

    def epoch_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed over the batch: absolute errors on the standardised scale (the loop multiplies by the scale)."""
        return (out[:, 0] - y).abs().sum()

    def point(self, metric: str, y: np.ndarray, out: np.ndarray) -> float:
        from medflow.evaluation.regression import point_metrics

        return point_metrics(y, out)[metric]

    def draws(self, y: np.ndarray, outs: list[np.ndarray], groups, metric: str, n_boot: int, seed: int) -> np.ndarray:
        from medflow.evaluation.regression import bootstrap_draws

        return bootstrap_draws(y, outs, groups, metric, n_boot, seed)

    def estimate(self, metric: str, y: np.ndarray, out: np.ndarray, groups, n_boot: int, seed: int):
        """(value, ci_low, ci_high) of metric, 95% patient bootstrap: a subgroup's row in the reports."""
        from medflow.evaluation.metrics import interval

        return (self.point(metric, y, out), *interval(self.draws(y, [out], groups, metric, n_boot, seed)[0]))

    def tree_objective(self, p, schema: Schema) -> str:
        """train.model=xgboost's objective (models/trees.py OBJECTIVES): train.loss's, on the standardised target."""
        return "huber" if p.loss == "huber" else "regression"

    def baselines(self, x_train, y_train, x_test, schema: Schema, seed: int, tree=None) -> dict[str, np.ndarray]:
        """tree: the gradient-boosted-tree baseline's evaluation.baselines.TreeBaseline, or None to leave it out."""
        from medflow.evaluation.baselines import regression_baselines

        return regression_baselines(x_train, y_train, x_test, seed, tree)
