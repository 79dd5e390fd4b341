"""Events to tensors for a synthetic ICU cohort of 10,000 stays (about 1.3M charted events): the validate step of
data.kind=events (read both tables, check times, units, duplicates and leakage, grid in chunks of stays, window
aggregates) and the train step's tensors (normalisation fitted on 70% of the stays, then values carried forward,
masks and time since the last value for all), each in a forked process, its peak RSS from the kernel's accounting.

Target: peak RSS <= 2048 MiB for each. Writes bench/results/sequence_grid.json.

    .venv/bin/python bench/sequence_grid.py [--stays 10000] [--chunk 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import forked, load, write

from medflow.params import from_dict
from medflow.paths import Paths
from medflow.sequences import cohort, steps

TARGET_MIB = 2048


def params(chunk: int):
    units = {v: {u: list(c) for u, c in units.items()} for v, units in cohort.UNITS.items()}
    events = {"labels": "data/labels.csv", "units": units, "after_prediction": "drop", "chunk_stays": chunk}
    data = {"kind": "events", "source": "data/events.csv", "target": "outcome", "patient_id": "subject_id"}
    return from_dict({"data": data | {"events": events}, "validate": {"max_quarantine": 0.2}})


def tensors(paths: Paths, chunk: int) -> None:
    n = len(steps.grid_of(paths))
    train = np.arange(int(0.7 * n))
    pre = steps.normaliser(paths, train)
    pre.transform(steps.grid_of(paths), chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stays", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=2000, help="data.events.chunk_stays")
    ap.add_argument("--quick", action="store_true", help="200 stays (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.stays, args.chunk = 200, 64
    os.environ.setdefault("MEDFLOW_SALT", "bench")
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(root=Path(tmp))
        paths.data_dir.mkdir()
        start = time.perf_counter()
        events, labels = cohort.cohort(args.stays, seed=0)
        events.to_csv(paths.data_dir / "events.csv", index=False)
        labels.to_csv(paths.data_dir / "labels.csv", index=False)
        del events, labels
        made = time.perf_counter() - start
        p = params(args.chunk)
        paths.step_dir("validate").mkdir(parents=True)
        validate_s, validate_mb = forked(steps.validate, p, paths)
        summary = json.loads(paths.summary("validate").read_text())
        # clean's copy of the grid, row for row (no label row is quarantined by the cohort)
        paths.step_dir("clean").mkdir(parents=True)
        steps.keep_grid(paths, np.arange(summary["rows_valid"]))
        tensor_s, tensor_mb = forked(tensors, paths, args.chunk)
    n_events = summary["events_in"]
    print(f"cohort: {args.stays:,} stays, {n_events:,} events written in {made:.1f} s", flush=True)
    print(f"validate (events -> grid {summary['grid']}): {validate_s:.1f} s, peak RSS {validate_mb:,.0f} MiB")
    print(f"tensors (fit on train, transform all): {tensor_s:.1f} s, peak RSS {tensor_mb:,.0f} MiB")
    write(
        {
            "name": "sequence_grid",
            "stays": args.stays,
            "events": n_events,
            "chunk_stays": args.chunk,
            "grid": summary["grid"],
            "validate_s": round(validate_s, 2),
            "validate_peak_rss_mb": round(validate_mb),
            "tensors_s": round(tensor_s, 2),
            "tensors_peak_rss_mb": round(tensor_mb),
            "target_mb": TARGET_MIB,
            "met": max(validate_mb, tensor_mb) <= TARGET_MIB,
            "load": {"before": before, "after": load(), "cores": os.cpu_count()},
        }
    )
    print(f"sequence_grid: peak RSS {max(validate_mb, tensor_mb):,.0f} MiB (target <= {TARGET_MIB})")
    print("written to bench/results/sequence_grid.json")


if __name__ == "__main__":
    main()
