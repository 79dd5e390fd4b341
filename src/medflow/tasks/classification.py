"""Classification: the target's values are classes; the network outputs one logit per class and learns by
cross-entropy; the metrics rank and count (higher is better)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medflow.params import Params, ParamsError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from medflow.data.features import Schema


class Classification:
    name = "classification"
    # metric -> higher is better; those allowed as evaluate.primary_metric
    direction = {"roc_auc": True, "pr_auc": True, "accuracy": True, "balanced_accuracy": True, "f1": True}
    primaries = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "f1")
    has_classes = True  # the schema lists them; LABEL is a class index
    epoch_metric = "accuracy"  # the loop's per-epoch score: train_accuracy, val_accuracy

    def check_params(self, params: Params) -> None:
        primary = params.evaluate.primary_metric
        if primary not in self.primaries:
            raise ParamsError(
                f"evaluate.primary_metric={primary!r} is a {'survival' if primary == 'c_index' else 'regression'} "
                f"metric; classification takes one of {', '.join(self.primaries)} (or -P data.task=regression, "
                "or survival)"
            )
        floor = params.register.min_primary
        floors = floor.values() if isinstance(floor, dict) else [] if floor is None else [floor]
        if any(not 0 <= f <= 1 for f in floors):
            raise ParamsError("register.min_primary: a classification metric's floor lies between 0 and 1")
        if params.tune.metric not in ("val_loss", f"val_{self.epoch_metric}"):
            other = "survival model's" if params.tune.metric == "val_c_index" else "regression's"
            raise ParamsError(f"tune.metric={params.tune.metric} is a {other}; classification tunes val_loss or "
                              "val_accuracy")  # fmt: skip
        if params.monitor.performance_floor is not None and not 0 <= params.monitor.performance_floor <= 1:
            raise ParamsError("monitor.performance_floor: a classification metric's floor lies between 0 and 1")

    def learning_targets(self, y: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict | None]:
        """Each split's labels as the network learns them (class indices), and no scale: outputs are logits."""
        import torch

        return {s: torch.from_numpy(v) for s, v in y.items()}, None

    def higher_is_better(self, metric: str) -> bool:
        return self.direction[metric]

    def head_width(self, schema: Schema) -> int:
        return len(schema.classes)

    def loss(self, cfg, device) -> torch.nn.Module:
        """cfg: the loop's FitConfig (class weights, label smoothing)."""
        import torch

        weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, device=device)
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)

    def loss_sum(self, cfg, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Validation loss summed over a batch, unweighted: early stopping tracks the real class mix."""
        import torch.nn.functional as F

        return F.cross_entropy(out, y, reduction="sum")

    def epoch_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed over the batch: rows classified right."""
        return (out.argmax(1) == y).sum().float()

    def point(self, metric: str, y: np.ndarray, out: np.ndarray) -> float:
        import numpy as np

        from medflow.evaluation.metrics import weighted_metric

        return float(weighted_metric(metric, y, out, np.ones((1, len(y))))[0])

    def draws(self, y: np.ndarray, outs: list[np.ndarray], groups, metric: str, n_boot: int, seed: int) -> np.ndarray:
        from medflow.evaluation.metrics import bootstrap_draws

        return bootstrap_draws(y, outs, groups, metric, n_boot, seed)

    def tree_objective(self, p, schema: Schema) -> str:
        """train.model=xgboost's objective (models/trees.py OBJECTIVES)."""
        from medflow.models.trees import classification_objective

        return classification_objective(len(schema.classes))

    def baselines(self, x_train, y_train, x_test, schema: Schema, seed: int, tree=None) -> dict[str, np.ndarray]:
        """tree: the gradient-boosted-tree baseline's evaluation.baselines.TreeBaseline, or None to leave it out."""
        from medflow.evaluation.baselines import baseline_proba

        return baseline_proba(x_train, y_train, x_test, len(schema.classes), seed, tree)
