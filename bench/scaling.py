"""Wall time and peak memory of every pipeline step at 10,000, 100,000 and 1,000,000 rows of a generated 32-column
table: each step runs in a forked process (the libraries already imported, as in `medflow run`), its peak RSS from
the kernel's accounting of that process. Training runs 2 epochs and evaluate 100 resamples at every size.

ratio = seconds per row of the whole pipeline at the largest size / at the middle size: <= 1 means time grows
no faster than linearly (target <= 1.10); mem_ratio is the same for memory: the largest growth of a step's peak
RSS over its peak at the smallest size, per added row, at the largest size / at the middle size. Writes
bench/results/scaling.json with the per-step table.

    .venv/bin/python bench/scaling.py [--rows 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
from pathlib import Path

from common import forked, lab_table, load, write, write_csv

from medflow import tracking
from medflow.params import from_dict
from medflow.paths import STEPS, Paths
from medflow.pipeline import run_step

PARAMS = {
    "data": {"source": "data/labs.csv", "target": "outcome", "positive_class": "yes", "identifiers": ["visit"]},
    "train": {"max_epochs": 2, "patience": 2},
    "evaluate": {"n_boot": 100},
    "register": {"model_name": "bench-scaling", "min_primary": None},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="1,000 and 2,000 rows (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows = [1000, 2000]
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for step in STEPS:  # imported once here, as `medflow run` imports them once
        __import__(f"medflow.steps.{step}")
    before = load()
    table: dict[str, dict[int, dict]] = {s: {} for s in STEPS}
    totals: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        template = Paths(root=Path(tmp) / "template")
        tracking.configure(template)  # one migrated MLflow store, copied into each project
        for rows in args.rows:
            paths = Paths(root=Path(tmp) / f"rows-{rows}")
            (paths.root / "data").mkdir(parents=True)
            paths.mlruns.mkdir(parents=True)
            shutil.copy(template.mlflow_db, paths.mlflow_db)
            write_csv(lab_table(rows), paths.root / "data" / "labs.csv")
            tracking.configure(paths)
            totals[rows] = 0.0
            for step in STEPS:
                seconds, peak = forked(run_step, step, from_dict(PARAMS), paths)
                totals[rows] += seconds
                table[step][rows] = {"wall_s": round(seconds, 2), "peak_rss_mb": round(peak)}
                print(f"{rows:>9,} rows  {step:<9} {seconds:7.2f} s  peak RSS {peak:7.0f} MiB", flush=True)
    big, mid = args.rows[-1], args.rows[-2]
    per_row = {r: totals[r] / r for r in args.rows}
    # Memory that grows with the data: each step's peak above its own peak at the smallest size.
    small = args.rows[0]
    added = {r: max(table[s][r]["peak_rss_mb"] - table[s][small]["peak_rss_mb"] for s in STEPS) for r in args.rows}
    ratio = per_row[big] / per_row[mid]
    result = write(
        {
            "name": "scaling",
            "ours": round(per_row[big] * 1000, 4),
            "baseline": round(per_row[mid] * 1000, 4),
            "ratio": round(ratio, 4),
            "unit": "s per 1,000 rows",
            "target": 1.10,
            "pairs": 1,
            "spread": [round(ratio, 4), round(ratio, 4)],
            "load": {"before": before, "after": load(), "cores": os.cpu_count()},
            "rows": args.rows,
            "total_s": {r: round(totals[r], 2) for r in args.rows},
            "mem_ratio": round((added[big] / (big - small)) / max(added[mid] / (mid - small), 1e-9), 4)
            if mid > small
            else None,
            "added_mb": added,
            "steps": table,
            "parent_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
    )
    print(
        f"scaling: {per_row[mid] * 1000:.3f} s per 1,000 rows at {mid:,}, {per_row[big] * 1000:.3f} at {big:,}: "
        f"ratio {result['ratio']:.3f} (target <= 1.10); added memory ratio {result['mem_ratio']}"
    )


if __name__ == "__main__":
    main()
