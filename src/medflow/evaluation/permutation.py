"""What a tabular model loses when one input column is shuffled on the test split: the gate's leak check and
evaluate's permutation importance share the rows shuffled and the shuffle. Aggregates only: a column's name and
numbers, never a row's value."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from medflow.evaluation.metrics import interval


def shuffle_plan(n_rows: int, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of at most cap of n_rows row positions (ascending), and the one permutation of the sample
    that shuffles every column."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(n_rows)[:cap])
    return take, rng.permutation(len(take))


def shuffled(rows: pd.DataFrame, features: list[str], order: np.ndarray) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each feature with the rows whose column of that name alone is permuted by order."""
    for feature in features:
        yield feature, rows.assign(**{feature: rows[feature].to_numpy()[order]})


def importance(
    task,
    metric: str,
    y: np.ndarray,
    table: pd.DataFrame,
    features: list[str],
    outputs: Callable[[pd.DataFrame], np.ndarray],
    groups: np.ndarray | None,
    cap: int,
    n_boot: int,
    seed: int,
) -> dict | None:
    """Per feature, the loss of the task's metric (tasks/: point, draws, higher_is_better) on at most cap rows of
    table when that column is shuffled, largest first, with the 95% interval of the paired patient bootstrap: the
    unshuffled and every shuffled model scored on the same resamples, so the interval is of the loss itself. A loss
    is a fall of a higher-is-better metric and a rise of a lower-is-better one (MAE). None when the metric is
    undefined on the sampled rows."""
    take, order = shuffle_plan(len(table), cap, seed)
    rows, y = table.iloc[take], y[take]
    groups = None if groups is None else groups[take]
    sign = 1.0 if task.higher_is_better(metric) else -1.0
    base = outputs(rows)
    point = task.point(metric, y, base)
    if not np.isfinite(point):
        return None
    outs = [base, *(outputs(s) for _, s in shuffled(rows, features, order))]
    draws = task.draws(y, outs, groups, metric, n_boot, seed)
    found = []
    for i, feature in enumerate(features, start=1):
        lo, hi = interval(sign * (draws[0] - draws[i]))
        drop = sign * (point - task.point(metric, y, outs[i]))
        found.append({"feature": feature, "drop": round(drop, 6), "ci_low": round(lo, 6), "ci_high": round(hi, 6)})
    found.sort(key=lambda r: -r["drop"])
    return {"metric": metric, "lower_is_better": sign < 0, "rows": len(take), "n_boot": n_boot, "features": found}
