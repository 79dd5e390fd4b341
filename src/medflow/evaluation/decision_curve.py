"""Decision-curve analysis (Vickers & Elkin 2006): the net benefit of acting on the model's binary predictions at each
threshold probability, against treating everyone and no one, computed by `dcurves` (the implementation of the
method's authors' group, Memorial Sloan Kettering).

Net benefit at threshold t = TP/n - FP/n * t / (1 - t): true positives found per patient, less false positives
weighted by the harm-to-benefit odds that choosing t implies. For a survival model at a horizon (Vickers et al. 2008),
the events by then among the patients above t are the Kaplan-Meier estimate in that group, as censoring leaves some
outcomes unknown.
"""

from __future__ import annotations

import numpy as np

MODEL = "model"


def grid(spec: tuple[float, float, float]) -> list[float]:
    """evaluate.dca_thresholds (from, to, step) as the list of thresholds, both ends included."""
    low, high, step = spec
    return np.round(np.arange(low, high + step / 2, step), 6).tolist()


def net_benefit(
    y: np.ndarray, p: np.ndarray, thresholds: list[float], time: np.ndarray | None = None, horizon: float | None = None
) -> list[dict[str, float]]:
    """Per threshold: the net benefit of the model, of treating all and of treating none (0). A survival model's:
    y the event indicator, time the follow-up and p the predicted probability of the event by horizon."""
    import logging

    import pandas as pd

    logging.getLogger("lifelines").setLevel(logging.WARNING)  # dcurves imports it for survival curves
    import dcurves

    data = pd.DataFrame({"outcome": y.astype(int), MODEL: p})
    survival = {}
    if time is not None:
        data["time"] = time
        survival = {"time": horizon, "time_to_outcome_col": "time"}
    table = dcurves.dca(data=data, outcome="outcome", modelnames=[MODEL], thresholds=thresholds, **survival)
    wide = table.pivot(index="threshold", columns="model", values="net_benefit").astype("float64")
    rows = [
        {"threshold": float(t), "model": float(r[MODEL]), "treat_all": float(r["all"]), "treat_none": float(r["none"])}
        for t, r in wide.iterrows()
    ]
    if time is not None:
        for row in rows:
            called = p >= row["threshold"]
            for key, above in (("model", called), ("treat_all", np.ones(len(p), dtype=bool))):
                if not np.isfinite(row[key]):
                    row[key] = _km_net_benefit(np.asarray(y, bool), np.asarray(time, float), above, horizon,
                                               row["threshold"])  # fmt: skip
    return rows


def _km_net_benefit(event: np.ndarray, time: np.ndarray, above: np.ndarray, horizon: float, t: float) -> float | None:
    """Where dcurves gives no value (no one above the threshold is followed to the horizon, e.g. every one of them
    had the event before it): the same formula from scikit-survival's Kaplan-Meier estimate. None where the group's
    follow-up ends before the horizon with some of it still event-free, so its survival there is unknown."""
    from medflow.evaluation.survival import km_at

    if not above.any():
        return 0.0
    tt, ee = time[above], event[above]
    alive, share = km_at(tt, ee, horizon), float(above.mean())
    if tt.max() < horizon and alive > 0:
        return None
    return share * (1 - alive) - share * alive * t / (1 - t)
