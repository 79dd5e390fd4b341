"""Metrics of a survival model's risk score (higher = earlier event) on the test split's (time, event) rows.

Harrell's and Uno's C-index are computed here in O(n log n): the comparable pairs are those of scikit-survival's
`concordance_index_censored` (an event against every row with a later time, and against rows censored at its own
time; ties in risk count half, compared exactly rather than within sksurv's 1e-8), counted by bit levels of the
risk rank, each level a sort and cumulative sums over the rows, never a loop over them. Uno's weights (the inverse
squared probability of remaining uncensored, from a Kaplan-Meier fit of the TRAINING split's censoring) come from
scikit-survival's `CensoringDistributionEstimator`, as its `concordance_index_ipcw` does.

Intervals follow evaluation/metrics.py: a resample weighs each patient by the times it was drawn (all its rows
alike; no patient id: each row is its own patient), 95% percentile. An exact resample costs O(n log n), so up to
EXACT_BOOTSTRAP_ROWS rows the C-index is bootstrapped; above, its interval is the normal one from the infinitesimal
jackknife of the same patient bootstrap (the C-index is a ratio of two U-statistics; its linearisation in the
patients' draw counts gives each patient's influence from the pairs it is in, one O(n log n) pass for all), which
the bootstrap approaches as n grows, at 1M rows in seconds rather than hours.

Time-dependent AUC, the Brier score and the integrated Brier score are scikit-survival's; each needs the training
split's (time, event) for its censoring weights. Calibration compares the mean predicted survival of each risk
group with its Kaplan-Meier estimate (scikit-survival's) at each horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.evaluation.metrics import _cum0, _patients, _resample_counts, interval

# Above this many rows the C-index's interval is the infinitesimal jackknife's: 1,000 exact resamples of 10k rows
# take a few seconds on a 2-core box, and from a few thousand rows on the two intervals' ends agree to a tenth of
# the interval's width (tests/test_survival.py).
EXACT_BOOTSTRAP_ROWS = 10_000
_Z = 1.959963984540054  # the normal quantile of metrics.LEVEL (95%)


def surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """scikit-survival's structured (event, time) array."""
    from sksurv.util import Surv

    return Surv.from_arrays(np.asarray(event, bool), np.asarray(time, float))


def _stable_order(block: np.ndarray) -> np.ndarray:
    """A stable argsort of non-negative integers by radix sorts of 16 bits (numpy radix-sorts 16-bit keys stably,
    ~10x faster than it sorts 64-bit ones): one pass while the values fit, two (low half, then high) above."""
    if block.max(initial=0) < 1 << 16:
        return np.argsort(block.astype(np.uint16), kind="stable")
    order = np.argsort((block & 0xFFFF).astype(np.uint16), kind="stable")
    return order[np.argsort((block[order] >> 16).astype(np.uint16), kind="stable")]  # ranks < 2^32: rows


def _in_blocks(at: np.ndarray, block: np.ndarray, w: np.ndarray | None, queries: list[tuple[np.ndarray, np.ndarray]]):
    """Per query set (start, qblock) and query q: the weight (a row of w per resample; None: each point weighs 1)
    of the points of block qblock[q] whose at >= start[q]. The points come sorted by at, so a stable sort by block
    orders them by (block, at), and each answer is a difference of cumulative sums. The queries come sorted by
    start, so a stable sort by block sorts them too, and numpy's search runs ~3x faster along sorted needles."""
    order = _stable_order(block)
    span = int(max(at[-1] if len(at) else 0, *(s.max(initial=0) for s, _ in queries))) + 2
    key = block[order] * span + at[order]
    cum = np.arange(len(at) + 1.0)[None, :] if w is None else _cum0(w[:, order])
    ends = np.cumsum(np.bincount(block, minlength=int(max(q.max(initial=0) for _, q in queries)) + 1))
    found = []
    for start, qb in queries:
        by_block = _stable_order(qb)
        lo = np.empty(len(qb), np.int64)
        lo[by_block] = np.searchsorted(key, (qb * span + start)[by_block])
        found.append(cum[:, ends[qb]] - cum[:, lo])
    return found


def _below(at: np.ndarray, rank: np.ndarray, w: np.ndarray | None, start: np.ndarray, bound: np.ndarray):
    """Per query q: (the weight of the points whose at >= start[q] and rank < bound[q], of those whose at >=
    start[q] and rank == bound[q]); rank, bound >= 0 integers; w as _in_blocks'.

    [0, bound) splits into one block of ranks per bit set in bound: at level k, the block of 2^k ranks below
    bound's own ((bound >> k) - 1 in units of 2^k). So each level is one sort and cumulative sums; the ties are
    bound's own block at level 0.
    """
    below = np.zeros((1 if w is None else w.shape[0], len(start)))
    tied = None
    for k in range(max(int(bound.max(initial=0)).bit_length(), 1)):
        on = np.flatnonzero((bound >> k) & 1)
        queries = [(start[on], (bound[on] >> k) - 1)] + ([(start, bound)] if k == 0 else [])
        found = _in_blocks(at, rank >> k, w, queries)
        below[:, on] += found[0]
        tied = found[1] if k == 0 else tied
    return below, tied


@dataclass(frozen=True)
class _Pairs:
    """The comparable pairs of (time, event) rows and the ranks of their risks, found once for every weighting.

    Rows sorted by time, events first within a time: an event at position i is comparable with every row at or
    after `after[i]`, the end of its time's events (later times, and rows censored at its own time).
    """

    order: np.ndarray  # the rows by (time, censored)
    rank: np.ndarray  # dense rank of each sorted row's risk
    events: np.ndarray  # positions of the events in the sorted rows
    after: np.ndarray  # per event: the first sorted position it is comparable with

    @classmethod
    def of(cls, time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> _Pairs:
        time, event = np.asarray(time, float), np.asarray(event, bool)
        # By time, then events first within a time; rows alike in both may come in any order. Two unstable sorts
        # (the second by 64-bit integers) cost a third of np.lexsort's.
        by_time = np.argsort(time)
        t = time[by_time]
        key = np.cumsum(np.r_[False, t[1:] != t[:-1]]) * 2 + ~event[by_time]
        order = by_time[np.argsort(key)]
        t, e = time[order], event[order]
        change = np.r_[True, (t[1:] != t[:-1]) | (e[1:] != e[:-1])]
        ends = np.r_[np.flatnonzero(change)[1:], len(t)]
        run_end = ends[np.cumsum(change) - 1]
        rank = np.unique(np.asarray(risk, float)[order], return_inverse=True)[1].astype(np.int64)
        events = np.flatnonzero(e)
        return cls(order, rank, events, run_end[events])

    def sums(self, w: np.ndarray | None, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(concordant, comparable) pair weight per resample: w (resamples x sorted rows; None: one resample, every
        row weighing 1) weighs both rows of a pair, u (per event) the event's side only (Uno's IPCW; 1: Harrell's)."""
        n = len(self.rank)
        lower, tied = _below(np.arange(n), self.rank, w, self.after, self.rank[self.events])
        if w is None:
            later, side = (n - self.after)[None, :], u[None, :]
        else:
            cum = _cum0(w)
            later, side = cum[:, -1:] - cum[:, self.after], w[:, self.events] * u
        return np.einsum("ij,ij->i", side, lower + 0.5 * tied), np.einsum("ij,ij->i", side, later)

    def influence(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per sorted row: the (concordant, comparable) weight of the pairs it is in, on either side, unit weights."""
        n = len(self.rank)
        at, q = np.arange(n), self.rank[self.events]
        conc, comp = np.zeros(n), np.zeros(n)
        lower, tied = _below(at, self.rank, None, self.after, q)
        conc[self.events] = u * (lower[0] + 0.5 * tied[0])
        comp[self.events] = u * (n - self.after)
        # The later side: events whose `after` is at or before the row (n - after >= n - position), riskier
        # (reversed rank below the row's), or tied with it for half. Events and rows reversed, so that each is
        # sorted by its n - after or n - position.
        top, back = int(self.rank.max(initial=0)), slice(None, None, -1)
        uw = None if (u == 1).all() else u[None, back]
        lower, tied = _below((n - self.after)[back], (top - q)[back], uw, (n - at)[back], (top - self.rank)[back])
        conc += (lower[0] + 0.5 * tied[0])[back]
        ordered = np.argsort(self.after, kind="stable")
        comp += np.r_[0, np.cumsum(u[ordered])][np.searchsorted(self.after[ordered], at, "right")]
        return conc, comp


@dataclass(frozen=True)
class Concordance:
    """A C-index with its 95% interval; method: "bootstrap" (percentile, n_boot resamples of patients) or
    "jackknife" (normal, the infinitesimal jackknife of that bootstrap: above EXACT_BOOTSTRAP_ROWS rows)."""

    value: float
    ci_low: float
    ci_high: float
    method: str
    n_boot: int  # resamples where the C-index was defined; 0 for the jackknife


def _check(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> None:
    if not len(time) == len(event) == len(risk):
        raise ValueError(f"time, event and risk need one value per row: {len(time)}, {len(event)}, {len(risk)}")
    for name, values in (("risk scores", risk), ("times", time)):
        bad = int((~np.isfinite(np.asarray(values, float))).sum())
        if bad:
            raise ValueError(f"{name}: {bad} are not finite")


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: the share of comparable pairs the risk orders right (ties in risk count half); NaN without
    a comparable pair. Equals sksurv's concordance_index_censored(event, time, risk)[0]."""
    return concordance(time, event, risk, n_boot=0).value


def uno_weights(
    train_time: np.ndarray, train_event: np.ndarray, time: np.ndarray, event: np.ndarray, tau: float | None = None
) -> np.ndarray:
    """Uno's per-row weight: 1 / G(t)^2 for an event before tau (G: Kaplan-Meier of the training split's
    censoring, scikit-survival's), 0 otherwise. Fails where G reaches 0 (a test event after every training time)."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    time, event = np.asarray(time, float), np.asarray(event, bool)
    keep = np.ones(len(time), bool) if tau is None else time < tau
    cens = CensoringDistributionEstimator().fit(surv(train_time, train_event))
    w = np.zeros(len(time))
    w[keep] = cens.predict_ipcw(surv(time[keep], event[keep]))
    return w**2


def uno_c(time, event, risk, train_time, train_event, tau: float | None = None) -> float:
    """Uno's C (IPCW, truncated at tau); equals sksurv's concordance_index_ipcw(train, test, risk, tau)[0]."""
    weights = uno_weights(train_time, train_event, time, event, tau)
    return concordance(time, event, risk, weights=weights, n_boot=0).value


def concordance(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    groups: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Concordance:
    """The C-index with its 95% patient-bootstrap interval (the module's docstring says which interval above
    EXACT_BOOTSTRAP_ROWS rows). weights: per row, the event's side of each pair (uno_weights for Uno's C; None:
    Harrell's). n_boot=0: the point alone, the interval NaN."""
    _check(time, event, risk)
    pairs = _Pairs.of(time, event, risk)
    u = np.ones(len(pairs.events)) if weights is None else np.asarray(weights, float)[pairs.order][pairs.events]
    inverse, k = _patients(None if groups is None else np.asarray(groups)[pairs.order], len(time))
    if n_boot and len(time) > EXACT_BOOTSTRAP_ROWS:
        conc, comp = pairs.influence(u)
        # Each pair is in two rows' sums: the totals are twice the C-index's numerator and denominator.
        num, den = conc.sum() / 2, comp.sum() / 2
        if not den > 0:
            return Concordance(float("nan"), float("nan"), float("nan"), "none", 0)
        value = float(num / den)
        if inverse is not None:
            conc, comp = np.bincount(inverse, conc, k), np.bincount(inverse, comp, k)
        se = float(np.sqrt(np.sum(((conc - value * comp) / den) ** 2)))
        return Concordance(value, value - _Z * se, value + _Z * se, "jackknife", 0)
    num, den = pairs.sums(None, u)
    value = float(num[0] / den[0]) if den[0] > 0 else float("nan")
    if n_boot == 0 or np.isnan(value):
        return Concordance(value, float("nan"), float("nan"), "none", 0)
    draws = []
    for counts in _resample_counts(k, len(time), n_boot, seed):
        num, den = pairs.sums(counts if inverse is None else counts[:, inverse], u)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws.append(np.where(den > 0, num / den, np.nan))
    d = np.concatenate(draws)
    lo, hi = interval(d)
    return Concordance(value, lo, hi, "bootstrap", int((~np.isnan(d)).sum()))


def time_auc(train_time, train_event, time, event, risk, horizons) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at each horizon and its mean weighted by the survival function (scikit-survival's
    cumulative_dynamic_auc, cases weighted by the training split's censoring)."""
    from sksurv.metrics import cumulative_dynamic_auc

    auc, mean = cumulative_dynamic_auc(surv(train_time, train_event), surv(time, event), risk, np.asarray(horizons))
    return np.asarray(auc, float), float(mean)


def time_auc_draws(
    train_time, train_event, time, event, risk, horizons, groups: np.ndarray | None, n_boot: int, seed: int
) -> np.ndarray:
    """The cumulative/dynamic AUC at each horizon on n_boot patient resamples, (n_boot, horizons); n_boot=0: the
    point on all rows, (1, horizons). As scikit-survival's cumulative_dynamic_auc computes it, a case (an event by
    t, weighted 1 / G(its time), G from the training split) against every control (still followed after t), ties
    in risk half: with G held fixed a resample weighs each pair by its two rows' draws, so each resample is one
    cumulative sum over the rows in risk order, never a loop over them."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    time, event = np.asarray(time, float), np.asarray(event, bool)
    order = np.argsort(np.asarray(risk, float), kind="stable")
    r = np.asarray(risk, float)[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    group = np.cumsum(np.r_[True, r[1:] != r[:-1]]) - 1
    first, last = starts[group], np.r_[starts[1:], len(r)][group]  # each sorted row's tie block [first, last)
    cens = CensoringDistributionEstimator().fit(surv(train_time, train_event))
    ipcw = cens.predict_ipcw(surv(time, event))[order]
    t, e = time[order], event[order]
    inverse, k = _patients(None if groups is None else np.asarray(groups)[order], len(t))
    chunks = [np.ones((1, len(t)))] if n_boot == 0 else _resample_counts(k, len(t), n_boot, seed)
    out = []
    for counts in chunks:
        w = counts if inverse is None else counts[:, inverse]
        cols = []
        for h in np.asarray(horizons, float):
            case = w * (((t <= h) & e) * ipcw)
            cum = _cum0(w * (t > h))
            pairs = cum[:, first] + 0.5 * (cum[:, last] - cum[:, first])
            with np.errstate(invalid="ignore", divide="ignore"):
                cols.append(np.einsum("ij,ij->i", case, pairs) / (case.sum(axis=1) * cum[:, -1]))
        out.append(np.stack(cols, axis=1))
    return np.concatenate(out) if out else np.empty((0, len(horizons)))


def brier(train_time, train_event, time, event, survival: np.ndarray, horizons) -> np.ndarray:
    """The IPCW Brier score at each horizon (scikit-survival's brier_score, censoring from the training split);
    survival: (rows, horizons) predicted probabilities of no event by each horizon."""
    from sksurv.metrics import brier_score

    return np.asarray(brier_score(surv(train_time, train_event), surv(time, event), survival, horizons)[1], float)


def integrated_brier(train_time, train_event, time, event, survival: np.ndarray, grid) -> float:
    """The Brier score integrated over grid (scikit-survival's integrated_brier_score): survival is (rows, grid)."""
    from sksurv.metrics import integrated_brier_score

    return float(integrated_brier_score(surv(train_time, train_event), surv(time, event), survival, grid))


def risk_groups(risk: np.ndarray, n_groups: int) -> np.ndarray:
    """Each row's risk group, 0 (lowest) to n_groups - 1, by quantiles of risk; tied risks share a group."""
    edges = np.quantile(risk, np.linspace(0, 1, n_groups + 1)[1:-1])
    return np.searchsorted(edges, risk, side="left")


def km_at(time: np.ndarray, event: np.ndarray, horizon: float) -> float:
    """The Kaplan-Meier survival at horizon (scikit-survival's estimator; its last value past the last time)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    t, s = kaplan_meier_estimator(np.asarray(event, bool), np.asarray(time, float))
    i = np.searchsorted(t, horizon, side="right") - 1
    return float(s[i]) if i >= 0 else 1.0


def calibration(time, event, risk, survival: np.ndarray, horizons, n_groups: int = 5, small: int = 1) -> list[dict]:
    """Per horizon and risk group: rows, mean predicted survival and Kaplan-Meier observed survival at the horizon.
    survival: (rows, horizons). Aggregates only: a group of fewer than small rows (tied risks can make one of a
    single patient) shows its count alone."""
    time, event, groups = np.asarray(time, float), np.asarray(event, bool), risk_groups(np.asarray(risk), n_groups)
    out = []
    for h, horizon in enumerate(horizons):
        for g in np.unique(groups):
            rows = groups == g
            shown = rows.sum() >= small
            out.append({"horizon": float(horizon), "group": int(g), "rows": int(rows.sum()),
                        "predicted": float(survival[rows, h].mean()) if shown else None,
                        "observed": km_at(time[rows], event[rows], horizon) if shown else None})  # fmt: skip
    return out


def km_by_group(time, event, risk, survival: np.ndarray, grid, n_groups: int = 3, small: int = 1) -> list[dict]:
    """The aggregates plot_km_by_group draws: per risk group of at least `small` rows (a group of one, from tied
    risks, would draw that patient's time and outcome), its Kaplan-Meier curve and its mean predicted survival on
    grid (survival: (rows, grid))."""
    from sksurv.nonparametric import kaplan_meier_estimator

    time, event, groups = np.asarray(time, float), np.asarray(event, bool), risk_groups(np.asarray(risk), n_groups)
    out = []
    for g in np.unique(groups):
        rows = groups == g
        if rows.sum() < small:
            continue
        t, s = kaplan_meier_estimator(event[rows], time[rows])
        out.append({"group": int(g), "rows": int(rows.sum()), "km_time": t, "km": s,
                    "grid": np.asarray(grid, float), "predicted": survival[rows].mean(axis=0)})  # fmt: skip
    return out


def plot_km_by_group(groups: list[dict], out: Path, unit: str = "time") -> Path:
    """Mean predicted survival (dashed) against the Kaplan-Meier estimate (steps) of each risk group."""
    from medflow.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    names = ["low", "middle", "high"] if len(groups) == 3 else [f"group {g['group'] + 1}" for g in groups]
    for g, name in zip(groups, names, strict=True):
        line = ax.step(np.r_[0, g["km_time"]], np.r_[1, g["km"]], where="post", label=f"{name} risk: observed (KM)")
        ax.plot(g["grid"], g["predicted"], "--", color=line[0].get_color(), label=f"{name} risk: predicted")
    ax.set_xlabel(unit)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    _save(fig, out)
    return out


def bootstrap_draws(
    time: np.ndarray, event: np.ndarray, risks: list[np.ndarray], groups: np.ndarray | None, n_boot: int, seed: int
) -> np.ndarray:
    """Harrell's C of each model on the same n_boot patient resamples, (models, n_boot), NaN where a resample holds
    no comparable pair: the gate pairs them as it pairs metrics.bootstrap_draws'. Each resample weighs a row by its
    patient's draws, whichever model's order its pairs are counted in; exact at any size (no jackknife)."""
    for risk in risks:
        _check(time, event, np.asarray(risk, float).reshape(-1))
    inverse, k = _patients(groups, len(time))
    pairs = [_Pairs.of(time, event, np.asarray(r, float).reshape(-1)) for r in risks]
    parts = []
    for counts in _resample_counts(k, len(time), n_boot, seed):
        w = counts if inverse is None else counts[:, inverse]
        row = []
        for p in pairs:
            num, den = p.sums(w[:, p.order], np.ones(len(p.events)))
            with np.errstate(invalid="ignore", divide="ignore"):
                row.append(np.where(den > 0, num / den, np.nan))
        parts.append(np.stack(row))
    return np.concatenate(parts, axis=1) if parts else np.empty((len(risks), 0))


def brier_terms(train_time, train_event, time, event, survival: np.ndarray, horizons) -> np.ndarray:
    """Each row's share of the IPCW Brier score at each horizon, (rows, horizons): brier()'s value is their mean,
    as scikit-survival's brier_score computes it (an event by t: S(t)^2 / G(T); a row still followed after t:
    (1 - S(t))^2 / G(t); G from the training split). With G held fixed, a resample's score is the mean weighted by
    the draws, so its interval costs one matrix product, like metrics.py's."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    time, event, survival = np.asarray(time, float), np.asarray(event, bool), np.asarray(survival, float)
    horizons = np.asarray(horizons, float)
    cens = CensoringDistributionEstimator().fit(surv(train_time, train_event))
    at_event = cens.predict_ipcw(surv(time, event))
    at_horizon = 1 / cens.predict_proba(horizons)
    case = (time[:, None] <= horizons[None, :]) & event[:, None]
    control = time[:, None] > horizons[None, :]
    return survival**2 * case * at_event[:, None] + (1 - survival) ** 2 * control * at_horizon[None, :]


def brier_intervals(terms: np.ndarray, groups: np.ndarray | None, n_boot: int, seed: int) -> np.ndarray:
    """95% percentile intervals, (columns, 2), of the mean of each column of terms (brier_terms, or any per-row
    share of a mean) over n_boot patient resamples."""
    inverse, k = _patients(groups, len(terms))
    draws = []
    for counts in _resample_counts(k, len(terms), n_boot, seed):
        w = counts if inverse is None else counts[:, inverse]
        with np.errstate(invalid="ignore", divide="ignore"):
            draws.append((w @ terms) / w.sum(axis=1, keepdims=True))
    d = np.concatenate(draws) if draws else np.empty((0, terms.shape[1]))
    return np.array([interval(d[:, j]) for j in range(terms.shape[1])])


@dataclass(frozen=True)
class Measured:
    """A survival model's metrics on (time, event) rows with their 95% patient-bootstrap intervals: name -> (value,
    ci_low, ci_high), mean_auc with none (NaN); the horizons they were measured at, and what evaluate's calibration
    and Kaplan-Meier plot read (the predicted survival at the horizons and on the grid, with the censored times)."""

    metrics: dict[str, tuple[float, float, float]]
    horizons: list[float]
    left: list[float]  # the model's horizons outside the rows' follow-up
    at: np.ndarray | None
    grid: np.ndarray | None
    on_grid: np.ndarray | None


def measure(t0, e0, time, event, risk, survival_at, model_horizons, groups, n_boot: int, seed: int) -> Measured:
    """Harrell's and Uno's C, the Brier score at each horizon the follow-up spans, its integral and the AUC at each
    horizon, with their patient-bootstrap intervals. (t0, e0): the rows the censoring weights are fitted on (the
    training split, or the evaluated rows themselves when no training split is at hand); survival_at(risk, times):
    the model's (rows, times) survival probabilities."""
    t0, e0 = np.asarray(t0, float), np.asarray(e0, bool)
    time, event = np.asarray(time, float), np.asarray(event, bool)
    metrics: dict[str, tuple[float, float, float]] = {}
    # The censoring weights (Uno's C, AUC, Brier) are undefined from the censoring rows' last time on, where its
    # censoring estimate may reach 0 (scikit-survival refuses): each horizon lies before it and inside the
    # follow-up, and a row followed to it or past is censored there for those metrics, its status at every horizon
    # unchanged.
    end = t0.max()
    past = time >= end
    t_w, e_w = np.where(past, end, time), event & ~past
    horizons = [h for h in model_horizons if t_w.min() <= h < t_w.max()]
    tau = max(horizons) if horizons else end
    for name, weights in (("c_index", None), ("uno_c", uno_weights(t0, e0, time, event, tau))):
        c = concordance(time, event, risk, groups, weights, n_boot, seed)
        metrics[name] = (c.value, c.ci_low, c.ci_high)
    at = grid = on_grid = None
    if horizons:
        at = survival_at(risk, horizons)
        grid = np.linspace(*np.quantile(t_w, [0.05, 0.95]), 50)
        grid = grid[grid < t_w.max()]
        on_grid = survival_at(risk, grid)
        # Per row, so that the patient bootstrap weighs them: the Brier score at each horizon, and its integral
        # over the grid (trapezoids, scikit-survival's integrated_brier_score) divided by the grid's span.
        terms = brier_terms(t0, e0, t_w, e_w, at, horizons)
        over = brier_terms(t0, e0, t_w, e_w, on_grid, grid)
        terms = np.column_stack([terms, np.trapezoid(over, grid, axis=1) / (grid[-1] - grid[0])])
        names = [f"brier_at_{h:g}" for h in horizons] + ["integrated_brier"]
        for name, value, (lo, hi) in zip(
            names, terms.mean(axis=0), brier_intervals(terms, groups, n_boot, seed), strict=True
        ):
            metrics[name] = (value, lo, hi)
        auc, mean_auc = time_auc(t0, e0, t_w, e_w, risk, horizons)
        draws = time_auc_draws(t0, e0, t_w, e_w, risk, horizons, groups, n_boot, seed)
        for h, a, d in zip(horizons, auc, draws.T, strict=True):
            metrics[f"auc_at_{h:g}"] = (a, *interval(d))
        metrics["mean_auc"] = (mean_auc, float("nan"), float("nan"))
    left = [h for h in model_horizons if h not in horizons]
    return Measured(metrics, horizons, left, at, grid, on_grid)
