"""`validate` on a wide table (default 2,000 columns x 500 rows) against a plain-pandas baseline, in one process.

The baseline is what a hand-written check does with the same table: read it as text, parse every numeric column,
count missing values and out-of-range numbers, count categories. medflow's validate does that plus identifier
and leakage screening, the suite (inferred on the first run, checked on the second), quarantine, profile and plots.
Writes bench/results/validate_wide.json.

    .venv/bin/python bench/validate_wide.py [--cols 2000 --rows 500 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate

RESULTS = Path(__file__).resolve().parent / "results"


def wide_table(cols: int, rows: int, seed: int = 0) -> pd.DataFrame:
    """Numeric lab values with missing cells, every tenth column categorical, and a weakly related binary target."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(cols):
        if i % 10 == 9:
            data[f"cat_{i}"] = rng.choice(["low", "mid", "high"], rows)
        else:
            x = rng.normal(50, 10, rows).round(2).astype(object)
            x[rng.random(rows) < 0.05] = None
            data[f"lab_{i}"] = x
    df = pd.DataFrame(data)
    df["outcome"] = np.where(rng.random(rows) < 0.4, "yes", "no")
    return df


def baseline(csv: Path) -> float:
    start = time.perf_counter()
    df = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=["", "NA"])
    for col in df.columns:
        parsed = pd.to_numeric(df[col], errors="coerce")
        if parsed.notna().mean() >= 0.9:
            lo, hi = parsed.quantile([0.005, 0.995])
            int(parsed.isna().sum()), int(((parsed < lo) | (parsed > hi)).sum())
        else:
            df[col].value_counts()
    return time.perf_counter() - start


def medflow_validate(root: Path, params) -> float:
    start = time.perf_counter()
    validate.run(params, Paths(root=root))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cols", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    params = from_dict({"data": {"source": "data/wide.csv", "target": "outcome", "positive_class": "yes"}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        csv = root / "data" / "wide.csv"
        wide_table(args.cols, args.rows).to_csv(csv, index=False)
        baseline(csv)  # warm-up: file cache, pandas code paths
        first, checked, base = [], [], []
        for _ in range(args.repeats):
            shutil.rmtree(root / "expectations", ignore_errors=True)
            first.append(medflow_validate(root, params))
            checked.append(medflow_validate(root, params))
            base.append(baseline(csv))
    result = {
        "cols": args.cols,
        "rows": args.rows,
        "baseline_s": round(statistics.median(base), 3),
        "first_run_s": round(statistics.median(first), 3),
        "second_run_s": round(statistics.median(checked), 3),
        "first_run_ratio": round(statistics.median(f / b for f, b in zip(first, base, strict=True)), 2),
        "second_run_ratio": round(statistics.median(c / b for c, b in zip(checked, base, strict=True)), 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "validate_wide.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"validate on {args.cols} columns x {args.rows} rows: first run (infers the suite) {result['first_run_s']} s, "
        f"second run (checks it) {result['second_run_s']} s; plain pandas {result['baseline_s']} s; ratios "
        f"{result['first_run_ratio']}x and {result['second_run_ratio']}x"
    )


if __name__ == "__main__":
    main()
