"""evaluate's bootstrap (95% intervals of every headline metric, 10,000 test rows x 1,000 resamples) against a
plain vectorised numpy bootstrap of ROC-AUC, accuracy and Brier score on the same predictions. Ours also computes
PR-AUC, balanced accuracy, F1, ECE and the four threshold metrics in the same pass. Target: ratio <= 3 and seconds,
not minutes. Writes bench/results/evaluate_bootstrap.json.

calibration_bootstrap: the calibration intercept and slope with their intervals on the same rows and resamples,
all resamples fitted together, against one statsmodels GLM and one brentq root per resample (what evaluate did
before). Target: ratio <= 0.8. Writes bench/results/calibration_bootstrap.json.

    .venv/bin/python bench/evaluate_bootstrap.py [--rows 10000 --resamples 1000 --pairs 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import paired, timed

from medflow.evaluation import calibration
from medflow.evaluation.metrics import bootstrap_ci, resample_weights
from medflow.models.recalibration import logit


def numpy_bootstrap(y: np.ndarray, p: np.ndarray, resamples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows drawn with replacement as an index matrix; ROC-AUC by ranks (Mann-Whitney), in chunks of resamples."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"roc_auc": [], "accuracy": [], "brier": []}
    n, chunk = len(y), max(1, 2_000_000 // len(y))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, (min(chunk, resamples - start), n))
        ys, ps = y[idx], p[idx]
        ranks = np.argsort(np.argsort(ps, axis=1), axis=1) + 1
        pos = ys.sum(axis=1)
        neg = n - pos
        with np.errstate(invalid="ignore", divide="ignore"):
            out["roc_auc"].append(((ranks * ys).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg))
        out["accuracy"].append(((ps >= 0.5) == ys).mean(axis=1))
        out["brier"].append(((ps - ys) ** 2).mean(axis=1))
    return {k: np.nanpercentile(np.concatenate(v), [2.5, 97.5]) for k, v in out.items()}


def per_resample_fits(y: np.ndarray, p: np.ndarray, resamples: int) -> list[tuple[float, float]]:
    """The point fit, then one resample at a time: each a statsmodels GLM and a brentq root."""
    lp = logit(p)
    fits = [calibration._fits(y, lp, None)]
    return fits + [calibration._fits(y, lp, w) for chunk in resample_weights(None, len(y), resamples, 0) for w in chunk]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1,000 rows, 100 resamples, one pair (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.resamples, args.pairs = 1000, 100, 1
    rng = np.random.default_rng(0)
    y = (rng.random(args.rows) < 0.3).astype(int)
    p1 = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, args.rows), 0.001, 0.999)
    proba = np.column_stack([1 - p1, p1])
    result = paired(
        "evaluate_bootstrap",
        lambda: timed(bootstrap_ci, y, proba, None, args.resamples, 0, 0.5),
        lambda: timed(numpy_bootstrap, y, p1, args.resamples),
        args.pairs,
        target=3.0,
        warmup=not args.quick,
        rows=args.rows,
        resamples=args.resamples,
    )
    print(f"bootstrap: {args.rows:,} rows x {args.resamples:,} resamples in {result['ours']:.2f} s")
    paired(
        "calibration_bootstrap",
        lambda: timed(calibration.logistic_calibration, y, p1, None, args.resamples, 0),
        lambda: timed(per_resample_fits, y, p1, args.resamples),
        args.pairs,
        target=0.8,
        warmup=not args.quick,
        rows=args.rows,
        resamples=args.resamples,
    )


if __name__ == "__main__":
    main()
