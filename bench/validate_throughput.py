"""`validate` on a generated long table (default 1,000,000 rows x 32 columns) against the same checks in vectorised
pandas, second run (the suite exists), in one process.

The baseline reads the CSV with pyarrow, parses each numeric column, and computes what the suite checks, with row ids:
missing values, cells that are not numbers, values outside the suite's ranges, categories outside its sets, the
outcome's classes. medflow's validate does that plus identifier and leakage screening, quarantine, the parquet of
valid rows, the profile and its plots. Target: ratio <= 4 and 1M x 32 within 60 s on 2 cores.
Writes bench/results/validate_throughput.json.

    .venv/bin/python bench/validate_throughput.py [--rows 1000000 --cols 32 --pairs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from common import lab_table, paired, timed, write_csv

from medflow.params import from_dict
from medflow.paths import Paths
from medflow.pipeline import run_step


def baseline(csv: Path, suite: dict) -> None:
    df = pd.read_csv(csv, engine="pyarrow", dtype_backend="numpy_nullable", dtype=str)
    bad: dict[str, np.ndarray] = {}
    for exp in suite["expectations"]:
        kw = exp.get("kwargs", {})
        col = kw.get("column")
        if col is None or col not in df:
            continue
        values = df[col]
        if exp["type"] == "expect_column_values_to_not_be_null":
            mask = values.isna().to_numpy()
        elif exp["type"] == "expect_column_values_to_match_regex":
            mask = (pd.to_numeric(values, errors="coerce").isna() & values.notna()).to_numpy()
        elif exp["type"] == "expect_column_values_to_be_between":
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            lo, hi = kw.get("min_value"), kw.get("max_value")
            mask = ((x < lo) if lo is not None else False) | ((x > hi) if hi is not None else False)
        elif exp["type"] == "expect_column_values_to_be_in_set":
            mask = (~values.isin(kw["value_set"]) & values.notna()).to_numpy()
        else:
            continue
        bad[f"{exp['type']}:{col}"] = np.flatnonzero(mask)
    quarantined = np.unique(np.concatenate(list(bad.values()))) if bad else np.array([], dtype=int)
    df.drop(index=quarantined).to_parquet(csv.with_suffix(".parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10,000 rows, one pair, no warm-up (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.pairs = 10_000, 1
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    params = from_dict({"data": {"source": "data/labs.csv", "target": "outcome", "positive_class": "yes"}})
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(root=Path(tmp))
        (paths.root / "data").mkdir()
        csv = write_csv(lab_table(args.rows, args.cols), paths.root / "data" / "labs.csv")
        first = timed(run_step, "validate", params, paths)  # infers the suite: every later run checks it
        suite = json.loads(paths.suite("labs").read_text())
        summary = json.loads(paths.summary("validate").read_text())
        print(f"first run (infers the suite): {first:.1f} s; {summary['rows_quarantined']} rows quarantined")
        if not args.quick:  # the first run was validate's warm-up; this is the baseline's
            baseline(csv, suite)
        result = paired(
            "validate_throughput",
            lambda: timed(run_step, "validate", params, paths),
            lambda: timed(baseline, csv, suite),
            args.pairs,
            target=4.0,
            warmup=False,
            rows=args.rows,
            cols=args.cols,
            csv_mb=round(csv.stat().st_size / 2**20, 1),
            first_run_s=round(first, 2),
            rows_per_s=None,
        )
    result["rows_per_s"] = round(args.rows / result["ours"])
    from common import write

    write(result)
    print(f"validate: {result['rows_per_s']:,} rows/s on {args.rows:,} x {args.cols} (target: 1M x 32 in <= 60 s)")


if __name__ == "__main__":
    main()
