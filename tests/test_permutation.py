"""Permutation importance (evaluation/permutation.py): the loss of the primary metric when one column is shuffled,
with a paired patient-bootstrap interval, in the metric's own direction."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from medflow.evaluation import permutation
from medflow.evaluation.plots import plot_permutation
from medflow.tasks import named

COLUMNS = ["a", "noise"]


def table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The outcome follows `a` alone; `noise` is independent of it. Two rows per patient."""
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"a": rng.normal(size=n), "noise": rng.normal(size=n)})
    return t, t["a"].to_numpy() + 0.5 * rng.normal(size=n)


def by_feature(found: dict) -> dict[str, dict]:
    return {r["feature"]: r for r in found["features"]}


def test_the_column_the_outcome_follows_loses_auc_when_shuffled_and_noise_does_not(tmp_path):
    (train, z_train), (test, z_test) = table(600, 0), table(400, 1)
    # Fitted, not hand-set: the model gives the noise column a small weight of its own, as a real model would.
    model = LogisticRegression().fit(train[COLUMNS], z_train > 0)
    groups = np.repeat(np.arange(200), 2).astype(str)
    found = permutation.importance(
        named("classification"), "roc_auc", (z_test > 0).astype(int), test, COLUMNS,
        lambda rows: model.predict_proba(rows[COLUMNS]), groups, 10_000, 500, 0,
    )  # fmt: skip
    a, noise = by_feature(found)["a"], by_feature(found)["noise"]
    assert [r["feature"] for r in found["features"]] == ["a", "noise"]
    assert found["rows"] == 400 and not found["lower_is_better"]
    assert 0.1 < a["ci_low"] <= a["drop"] <= a["ci_high"]
    assert noise["ci_low"] < 0 < noise["ci_high"]
    # Paired: the resampling noise both models share cancels, so the interval is far narrower than the AUC's own.
    assert noise["ci_high"] - noise["ci_low"] < 0.02
    plot_permutation(found, tmp_path / "permutation_importance.png")
    assert (tmp_path / "permutation_importance.png").stat().st_size > 0


@pytest.mark.parametrize("metric", ["mae", "rmse", "r2"])
def test_a_lower_is_better_metric_counts_its_rise_as_the_loss(metric):
    (train, y_train), (test, y_test) = table(600, 0), table(400, 1)
    model = LinearRegression().fit(train[COLUMNS], 3 * y_train)
    found = permutation.importance(
        named("regression"), metric, 3 * y_test, test, COLUMNS,
        lambda rows: model.predict(rows[COLUMNS])[:, None], None, 10_000, 500, 0,
    )  # fmt: skip
    a = by_feature(found)["a"]
    assert found["lower_is_better"] == (metric != "r2")
    assert 0 < a["ci_low"] <= a["drop"] <= a["ci_high"], a


def test_importance_rows_caps_the_rows_rescored():
    (train, z_train), (test, z_test) = table(600, 0), table(400, 1)
    model = LogisticRegression().fit(train[COLUMNS], z_train > 0)
    found = permutation.importance(
        named("classification"), "roc_auc", (z_test > 0).astype(int), test, COLUMNS,
        lambda rows: model.predict_proba(rows[COLUMNS]), None, 50, 200, 0,
    )  # fmt: skip
    assert found["rows"] == 50 and found["n_boot"] == 200
