"""Survival (time to event): each row's follow-up time (data.time) and whether it ended in the event (data.event,
the target; 0 censored). The network has one output, a risk score, trained by Cox's partial likelihood
(models/cox.py says why Cox) on batches that each hold an event; Harrell's C-index (higher is better) measures
it, and the Breslow baseline fitted on the training split's scores turns a score into survival probabilities at
train.horizons.

Times must be finite and above 0: a missing time is no follow-up at all, a negative one an error, and a time of 0
is an event before follow-up began or a patient never followed, which neither the partial likelihood nor the
censoring weights of Uno's C and the Brier score can use (record a same-day event as a fraction of the unit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medflow.params import Params, ParamsError

if TYPE_CHECKING:
    import torch

    from medflow.data.features import Schema

# With no train.horizons: the quartiles of the training split's event times, so each horizon has events before
# and patients still followed after it.
DEFAULT_QUANTILES = (0.25, 0.5, 0.75)


class Survival:
    name = "survival"
    direction = {"c_index": True}  # Uno's C, AUC and Brier are reported, never a primary
    primaries = ("c_index",)
    has_classes = False  # LABEL is the event (0/1), TIME the follow-up time
    epoch_metric = "c_index"  # train_c_index (the epoch's training outputs, whole), val_c_index (the whole split)

    def check_params(self, params: Params) -> None:
        data = params.data
        primary = params.evaluate.primary_metric
        if primary not in self.primaries:
            raise ParamsError(f"evaluate.primary_metric={primary!r}: survival takes c_index (Harrell's)")
        if data.kind != "tabular":
            raise ParamsError("data.task=survival takes a table (data.kind=tabular)")
        if data.time is None or data.event is None:
            raise ParamsError("data.task=survival needs data.time (the follow-up column) and data.event (its event)")
        if data.time == data.event:
            raise ParamsError(f"data.time and data.event both name {data.time!r}: they are two columns")
        if data.positive_class is not None:
            raise ParamsError("data.positive_class: a survival run names its event's value in data.event_value")
        if params.train.mixup > 0:
            raise ParamsError("train.mixup mixes class labels; a survival run takes train.mixup=0")
        if any(not h > 0 for h in params.train.horizons or []):
            raise ParamsError("train.horizons: times above 0, in the time column's units")
        if params.tune.metric not in ("val_loss", f"val_{self.epoch_metric}"):
            raise ParamsError(f"tune.metric={params.tune.metric}: survival tunes val_loss or val_c_index")
        if params.monitor.performance_floor is not None and not 0 <= params.monitor.performance_floor <= 1:
            raise ParamsError("monitor.performance_floor: a C-index's floor lies between 0 and 1")
        floor = params.register.min_primary
        floors = floor.values() if isinstance(floor, dict) else [] if floor is None else [floor]
        if any(not 0 <= f <= 1 for f in floors):
            raise ParamsError("register.min_primary: a C-index's floor lies between 0 and 1")

    def learning_targets(self, y: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict | None]:
        """Each split's (time, event) pairs (data.manifest.outcome) as the loss reads them, and no scale: the output
        is a risk score."""
        import torch

        return {s: torch.from_numpy(np.ascontiguousarray(v, dtype="float32")) for s, v in y.items()}, None

    def higher_is_better(self, metric: str) -> bool:
        return self.direction[metric]

    def head_width(self, schema: Schema) -> int:
        return 1

    def loss(self, cfg, device):
        from medflow.models.cox import cox_loss

        return lambda out, y: cox_loss(out[:, 0], y[:, 0], y[:, 1])

    def loss_sum(self, cfg, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The partial likelihood of the whole validation split (the loop scores it in one piece), times its rows
        as the loop divides by them."""
        from medflow.models.cox import cox_loss

        return cox_loss(out[:, 0], y[:, 0], y[:, 1]) * len(y)

    def epoch_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Harrell's C times the rows (the loop divides by them): of the epoch's training outputs, or of the whole
        validation split. Read on the CPU: one copy per epoch and split (the loop keeps the batches' outputs on the
        device until the epoch ends)."""
        import torch

        from medflow.evaluation.survival import harrell_c

        y = y.detach().cpu().double().numpy()
        c = harrell_c(y[:, 0], y[:, 1], out.detach()[:, 0].cpu().double().numpy())
        return torch.tensor(0.0 if np.isnan(c) else c * len(y), device=out.device)

    def batches(self, order: torch.Tensor, y: torch.Tensor, batch: int, seed: int) -> list[torch.Tensor]:
        """The epoch's rows (order) in batches of about batch that each hold an event (cox.event_batches)."""
        import torch

        from medflow.models.cox import event_batches

        events = y[order.cpu(), 1].numpy() > 0
        return [order[torch.from_numpy(i)] for i in event_batches(events, batch, seed)]

    def point(self, metric: str, y: np.ndarray, out: np.ndarray) -> float:
        """y: (rows, 2) time and event; out: risk scores (rows x 1)."""
        from medflow.evaluation.survival import harrell_c

        return harrell_c(y[:, 0], y[:, 1], np.asarray(out, float)[:, 0])

    def draws(self, y: np.ndarray, outs: list[np.ndarray], groups, metric: str, n_boot: int, seed: int) -> np.ndarray:
        from medflow.evaluation.survival import bootstrap_draws

        return bootstrap_draws(y[:, 0], y[:, 1], [np.asarray(o)[:, 0] for o in outs], groups, n_boot, seed)

    def estimate(self, metric: str, y: np.ndarray, out: np.ndarray, groups, n_boot: int, seed: int):
        """(value, ci_low, ci_high) of Harrell's C, 95% patient bootstrap (the jackknife above
        survival.EXACT_BOOTSTRAP_ROWS rows): a subgroup's row in the reports."""
        from medflow.evaluation.survival import concordance

        c = concordance(y[:, 0], y[:, 1], np.asarray(out, float)[:, 0], groups, None, n_boot, seed)
        return c.value, c.ci_low, c.ci_high

    def tree_objective(self, p, schema: Schema) -> str:
        """train.model=xgboost's objective (models/trees.py OBJECTIVES): Cox's partial likelihood, as the network's."""
        return "cox"

    def baselines(self, x_train, y_train, x_test, schema: Schema, seed: int, tree=None) -> dict[str, np.ndarray]:
        """tree: the gradient-boosted-tree baseline's evaluation.baselines.TreeBaseline, or None to leave it out."""
        from medflow.evaluation.baselines import survival_baselines

        return survival_baselines(x_train, y_train[:, 0], y_train[:, 1], x_test, seed, tree)

    def horizons(self, params: Params, time: np.ndarray, event: np.ndarray) -> list[float]:
        """train.horizons, or the training split's event-time quartiles."""
        if params.train.horizons:
            return sorted(float(h) for h in params.train.horizons)
        return sorted({float(q) for q in np.quantile(time[event > 0], DEFAULT_QUANTILES)})
