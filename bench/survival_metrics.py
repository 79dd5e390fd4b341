"""The survival metrics' C-index against lifelines' concordance_index, on a synthetic cohort (exponential event
times that the risk shortens, a third censored, times in whole days so that many tie).

survival_cindex: Harrell's C alone at 100,000 rows, ours vs lifelines (target: ratio <= 0.1).
survival_cindex_ci: Harrell's C with its 95% patient interval at 1,000,000 rows (above EXACT_BOOTSTRAP_ROWS: the
infinitesimal jackknife) vs lifelines' C alone on the same rows (target: <= 10 s, recorded as seconds; the ratio's
target 1.0: the interval costs no more than lifelines' point). Writes bench/results/<name>.json for each.

    .venv/bin/python bench/survival_metrics.py [--rows 100000 --big 1000000 --pairs 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import paired, timed
from lifelines.utils import concordance_index

from medflow.evaluation.survival import concordance, harrell_c


def cohort(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    event_time = rng.exponential(365 / np.exp(risk))
    censor = rng.uniform(0, 1500, n)
    return np.ceil(np.minimum(event_time, censor)), event_time <= censor, risk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2,000 and 20,000 rows, one pair (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.big, args.pairs = 2000, 20_000, 1
    time, event, risk = cohort(args.rows)
    paired(
        "survival_cindex",
        lambda: timed(harrell_c, time, event, risk),
        lambda: timed(concordance_index, time, -risk, event),  # lifelines scores survival: the negated risk
        args.pairs,
        target=0.1,
        warmup=not args.quick,
        rows=args.rows,
    )
    time, event, risk = cohort(args.big, seed=1)
    found = concordance(time, event, risk)
    result = paired(
        "survival_cindex_ci",
        lambda: timed(concordance, time, event, risk),
        lambda: timed(concordance_index, time, -risk, event),
        max(1, args.pairs // 2),
        target=1.0,
        warmup=False,
        rows=args.big,
        method=found.method,
        target_s=10.0,
    )
    print(
        f"C-index {found.value:.4f} (95% {found.ci_low:.4f}-{found.ci_high:.4f}, {found.method}) on {args.big:,} rows "
        f"in {result['ours']:.2f} s (target <= 10 s)"
    )


if __name__ == "__main__":
    main()
