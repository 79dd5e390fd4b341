"""The gate's leak check: a near-perfect tabular model whose test ROC-AUC rests on a few features, each of which
costs it much when shuffled, is suspected of learning from data recorded after the outcome. Aggregates only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.evaluation.metrics import weighted_metric
from medflow.evaluation.permutation import shuffle_plan, shuffled
from medflow.models.bundle import Predictor
from medflow.params import Params, yaml_list

# Test rows the leakage check shuffles each feature of: its ROC-AUC changes are stable long before 150k rows.
LEAK_ROWS = 20_000


def leak_check(
    params: Params, predictor: Predictor, test_rows: pd.DataFrame, y: np.ndarray, roc_auc: float | None
) -> dict | None:
    """What shuffling each feature on the test split costs a near-perfect tabular model's ROC-AUC, and the features
    whose loss reaches register.gate.leak_drop (aggregates only); None for image and sequence models and models below
    validate.leakage_auc."""
    vp, gp = params.validate_, params.register.gate
    if predictor.schema.kind != "tabular" or roc_auc is None or roc_auc < vp.leakage_auc:
        return None
    take, order = shuffle_plan(len(y), LEAK_ROWS, params.seed)
    rows, y, one = test_rows.iloc[take], y[take], np.ones((1, len(take)))
    base = float(weighted_metric("roc_auc", y, predictor.predict_proba(rows), one)[0])
    drops = {}
    for feature, shuffled_rows in shuffled(rows, predictor.schema.features, order):
        lost = base - float(weighted_metric("roc_auc", y, predictor.predict_proba(shuffled_rows), one)[0])
        drops[feature] = round(lost, 4)
    ranked = sorted(drops, key=drops.get, reverse=True)
    carried = [f for f in ranked if drops[f] >= gp.leak_drop]
    return {
        "roc_auc": roc_auc,
        "rows_shuffled": len(take),
        "drops": {f: drops[f] for f in ranked[: max(5, len(carried))]},
        "suspects": [f for f in carried if f not in vp.accept_leakage],
        "accepted": [f for f in carried if f in vp.accept_leakage],
    }


def leak_reason(check: dict | None, params: Params) -> str | None:
    """Why a near-perfect model does not promote, with the -P that fixes it; None when nothing is suspected."""
    if not check or not check["suspects"]:
        return None
    suspects, data, vp = check["suspects"], params.data, params.validate_
    costs = ", ".join(f"{f} {check['drops'][f]:.3f}" for f in suspects)
    return (
        f"suspected target leakage: test roc_auc={check['roc_auc']:.4f} rests on {len(suspects)} feature(s), each of "
        f"which costs it this much when shuffled: {costs} (register.gate.leak_drop="
        f"{params.register.gate.leak_drop:g}). If they are recorded after the outcome, drop them "
        f"(-P 'data.exclude={yaml_list([*data.exclude, *suspects])}'); if they are legitimate predictors, accept them "
        f"(-P 'validate.accept_leakage={yaml_list([*vp.accept_leakage, *suspects])}')"
    )
