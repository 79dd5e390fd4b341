"""Decision-curve analysis (Vickers & Elkin 2006): the net benefit of acting on the model's binary predictions at each
threshold probability, against treating everyone and no one, computed by `dcurves` (the implementation of the
method's authors' group, Memorial Sloan Kettering).

Net benefit at threshold t = TP/n - FP/n * t / (1 - t): true positives found per patient, less false positives
weighted by the harm-to-benefit odds that choosing t implies.
"""

from __future__ import annotations

import numpy as np

MODEL = "model"


def grid(spec: tuple[float, float, float]) -> list[float]:
    """evaluate.dca_thresholds (from, to, step) as the list of thresholds, both ends included."""
    low, high, step = spec
    return np.round(np.arange(low, high + step / 2, step), 6).tolist()


def net_benefit(y: np.ndarray, p: np.ndarray, thresholds: list[float]) -> list[dict[str, float]]:
    """Per threshold: the net benefit of the model, of treating all and of treating none (0)."""
    import logging

    import pandas as pd

    logging.getLogger("lifelines").setLevel(logging.WARNING)  # dcurves imports it for survival curves alone
    import dcurves

    table = dcurves.dca(
        data=pd.DataFrame({"outcome": y.astype(int), MODEL: p}),
        outcome="outcome",
        modelnames=[MODEL],
        thresholds=thresholds,
    )
    wide = table.pivot(index="threshold", columns="model", values="net_benefit")
    return [
        {"threshold": float(t), "model": float(r[MODEL]), "treat_all": float(r["all"]), "treat_none": float(r["none"])}
        for t, r in wide.iterrows()
    ]
