"""The deep survival loss: Cox's negative partial log-likelihood of a network's risk scores, and the Breslow
baseline that turns a risk score into survival probabilities.

Why Cox rather than a discrete-time model (a logistic hazard per interval): the partial likelihood uses the
recorded times as they are, with no grid of intervals to choose and no loss of order within an interval; it needs
one output per patient whatever the horizons; with a linear network it is exactly the classical Cox
proportional-hazards model, so the loss can be checked against lifelines and scikit-survival; and the Breslow
estimator recovers the survival curve from the trained scores, at any horizon asked later. Its costs: the hazards
are assumed proportional (a network may bend the risk, not the shape of the curve over time), and each batch's
risk sets stand for the whole cohort's, so a batch must hold at least one event (event_batches) and larger
batches estimate the likelihood better.

Ties default to Efron's approximation: follow-up is recorded in days, weeks or months, so events share times,
and Efron's is much closer than Breslow's to the exact likelihood for tied events at the same cost here (R's
survival and lifelines default to it too); Breslow's stays available as scikit-survival's default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TIES = ("efron", "breslow")


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str = "efron") -> torch.Tensor:
    """The negative partial log-likelihood per event of risk (higher = earlier event) on a batch.

    Sorted once by time, latest first: a row's risk set (every row still followed at its time) is the prefix up to
    the end of its time's block, a cumulative sum. Efron's approximation takes the l-th of d events tied at a time
    as facing the risk set less l/d of their own hazard; Breslow's gives each the whole risk set. Exponentials are
    taken after subtracting the batch's largest risk, so no sum overflows.
    """
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}: one of {', '.join(TIES)}")
    event = event.to(risk.dtype)
    n_events = event.sum()
    if not n_events > 0:
        raise ValueError(f"a batch of {len(risk)} rows holds no event: its partial likelihood is undefined")
    order = torch.argsort(time, descending=True)
    r, t, e = risk.reshape(-1)[order], time[order], event[order]
    change = torch.ones_like(t, dtype=torch.bool)
    change[1:] = t[1:] != t[:-1]
    block = torch.cumsum(change.long(), 0) - 1
    ends = torch.nonzero(torch.cat([change[1:], change.new_ones(1)])).reshape(-1)
    shift = r.detach().max()
    hazard = torch.exp(r - shift)
    at_risk = torch.cumsum(hazard, 0)[ends][block]
    if ties == "efron":
        tied = torch.zeros(len(ends), dtype=r.dtype, device=r.device).index_add(0, block, hazard * e)[block]
        d = torch.zeros(len(ends), dtype=r.dtype, device=r.device).index_add(0, block, e)[block]
        # l: the events of the same time before this one (0 for the first), counted along the sorted rows.
        seen = torch.cumsum(e, 0) - e
        first = seen[torch.cat([ends.new_zeros(1), ends[:-1] + 1])][block]
        at_risk = at_risk - torch.where(e > 0, (seen - first) / d.clamp(min=1), 0) * tied
    return -((r - shift - torch.log(at_risk)) * e).sum() / n_events


def event_batches(event: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """Row indices in batches of about batch_size, each holding at least one event (the loss needs one), the same
    for the same seed: events and censored rows are shuffled apart and dealt round the batches, so every batch
    keeps the table's share of events; with fewer events than batches, fewer, larger batches."""
    event = np.asarray(event, bool)
    events, censored = np.flatnonzero(event), np.flatnonzero(~event)
    if not len(events):
        raise ValueError(f"none of {len(event)} rows is an event: no batch can hold one")
    rng = np.random.default_rng(seed)
    n_batches = min(-(-len(event) // max(batch_size, 1)), len(events))
    events, censored = rng.permutation(events), rng.permutation(censored)
    return [rng.permutation(np.r_[events[i::n_batches], censored[i::n_batches]]) for i in range(n_batches)]


@dataclass(frozen=True)
class Baseline:
    """Breslow's baseline cumulative hazard, fitted on the training split's risk scores: survival at t of a
    score r is exp(-H0(t) * exp(r)). H0 steps up at each event time by (events then) / (sum of exp(risk) at risk)."""

    times: np.ndarray  # the distinct event times, ascending
    cumhaz: np.ndarray  # H0 just after each
    shift: float  # the training scores' largest, taken out of every exponential

    @classmethod
    def fit(cls, risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> Baseline:
        risk, time, event = np.asarray(risk, float).reshape(-1), np.asarray(time, float), np.asarray(event, bool)
        shift = float(risk.max())
        times, inverse = np.unique(time, return_inverse=True)
        hazard = np.bincount(inverse, np.exp(risk - shift), len(times))
        at_risk = np.cumsum(hazard[::-1])[::-1]
        deaths = np.bincount(inverse, event, len(times))
        had = deaths > 0
        return cls(times[had], np.cumsum(deaths[had] / at_risk[had]), shift)

    def cumulative_hazard(self, horizons) -> np.ndarray:
        i = np.searchsorted(self.times, np.asarray(horizons, float), side="right")
        return np.r_[0.0, self.cumhaz][i]

    def survival(self, risk: np.ndarray, horizons) -> np.ndarray:
        """(rows, horizons) probabilities of no event by each horizon."""
        scale = np.exp(np.asarray(risk, float).reshape(-1, 1) - self.shift)
        return np.exp(-scale * self.cumulative_hazard(horizons)[None, :])
