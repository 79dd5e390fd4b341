"""Which inputs drive a tabular classifier's prediction: one named method per model kind, each contribution in the
units of the model's log-odds (binary: of the positive class; multiclass: the predicted class's logit), summed over
the encoded columns of one input column (its missing-value indicator, its one-hot categories), so every contribution
carries a column name and a signed number, never a value of the row or of another patient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.data.features import coerce_features
from medflow.models.bundle import Predictor

METHODS = {
    "network": "Captum IntegratedGradients (baseline: the all-zero encoded input, i.e. the training means and no "
    "category; 32 steps)",
    "trees": "XGBoost pred_contribs (TreeSHAP, exact for the trees)",
}


def method(predictor: Predictor) -> str:
    return METHODS["trees" if predictor.trees is not None else "network"]


def _columns(predictor: Predictor) -> tuple[list[str], np.ndarray]:
    """The input columns, and for each encoded feature the index of the column it encodes."""
    pre = predictor.preprocessor
    columns = list(predictor.schema.features)
    owner = []
    for name in pre.feature_names:
        base = name.removesuffix("__missing") if name.endswith("__missing") else name
        if base not in columns:
            base = next(c for c in pre.categorical if name.startswith(f"{c}="))
        owner.append(columns.index(base))
    return columns, np.asarray(owner)


def attributions(predictor: Predictor, raw: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """(input columns, rows x columns contributions) of rows the model scores (checked by the caller)."""
    if predictor.schema.kind == "image" or not predictor.classes:
        raise ValueError("explanations cover tabular classifiers: this model is not one")
    x = predictor.preprocessor.transform(coerce_features(raw, predictor.schema))
    binary = len(predictor.classes) == 2
    if predictor.trees is not None:
        import xgboost as xgb

        contribs = predictor.trees.booster.predict(xgb.DMatrix(x), pred_contribs=True)
        if not binary:  # (rows, classes, features + bias): the predicted class's
            picked = predictor.trees.proba(x).argmax(axis=1)
            contribs = contribs[np.arange(len(x)), picked]
        encoded = contribs[:, :-1]  # the last column is the bias (the expected margin)
    else:
        encoded = _integrated_gradients(predictor.model, x, binary)
    columns, owner = _columns(predictor)
    out = np.zeros((len(x), len(columns)))
    np.add.at(out.T, owner, encoded.T)
    return columns, out


def _integrated_gradients(model, x: np.ndarray, binary: bool) -> np.ndarray:
    import torch
    from captum.attr import IntegratedGradients

    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if binary:
        # The log-odds of the positive class: logit 1 - logit 0 of the two-way softmax.
        def forward(t):
            z = model(t)
            return z[:, 1] - z[:, 0]

        target = None
    else:

        def forward(t):
            return model(t)

        with torch.no_grad():
            target = model(inputs).argmax(dim=1)
    ig = IntegratedGradients(forward)
    return ig.attribute(inputs, baselines=torch.zeros_like(inputs), target=target, n_steps=32).detach().numpy()


def top(columns: list[str], contributions: np.ndarray, k: int) -> pd.DataFrame:
    """Per row, its k largest contributions by size: explain_<i>_feature (a column name) and explain_<i>_value."""
    k = min(k, len(columns))
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    names = np.asarray(columns, dtype=object)[order]
    values = np.take_along_axis(contributions, order, axis=1)
    out = {}
    for i in range(k):
        out[f"explain_{i + 1}_feature"] = names[:, i]
        out[f"explain_{i + 1}_value"] = values[:, i].round(6)
    return pd.DataFrame(out)


def global_importance(columns: list[str], contributions: np.ndarray) -> list[dict]:
    """Mean |contribution| per column over the rows, largest first: an aggregate, never a row."""
    mean = np.abs(contributions).mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    return [{"feature": columns[i], "mean_abs": round(float(mean[i]), 6)} for i in order]
