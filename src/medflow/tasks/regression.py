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
        if params.evaluate.subgroups:
            raise ParamsError("evaluate.subgroups: not yet for regression; set evaluate.subgroups=[]")
        if params.train.mixup > 0:
            raise ParamsError("train.mixup mixes class labels; a regression run takes train.mixup=0")

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

    def baselines(self, x_train, y_train, x_test, schema: Schema, seed: int) -> dict[str, np.ndarray]:
        from medflow.evaluation.baselines import regression_baselines

        return regression_baselines(x_train, y_train, x_test, seed)
