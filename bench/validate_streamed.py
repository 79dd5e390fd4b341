"""`validate` of a table file streamed in chunks against the same file validated in memory, each in a forked
process (peak RSS from the kernel's accounting of that process), then the streamed run on a table several times
larger: its memory should stay where it was while the in-memory path's grows with the table.

ratio = streamed seconds / in-memory seconds on the same table (two passes over the file, target <= 1.5);
mem_ratio = the streamed run's peak RSS on the largest table / on the first (target <= 1.1: flat in the rows).
Each run infers the suite (first use). Writes bench/results/validate_streamed.json.

    .venv/bin/python bench/validate_streamed.py [--rows 1000000 3000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from common import forked, lab_table, load, write, write_csv

from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate

PARAMS = {"data": {"source": "data/labs.csv", "target": "outcome", "positive_class": "yes", "identifiers": ["visit"]}}


def table(root: Path, rows: int) -> Paths:
    paths = Paths(root=root)
    (paths.root / "data").mkdir(parents=True)
    # Written in pieces: the largest table need not fit in this process either.
    step = 1_000_000
    parts = [write_csv(lab_table(min(step, rows - i), seed=i), root / f"part{i}.csv") for i in range(0, rows, step)]
    with (paths.root / "data" / "labs.csv").open("wb") as out:
        for k, part in enumerate(parts):
            with part.open("rb") as f:
                if k:
                    f.readline()  # the header, once
                shutil.copyfileobj(f, out)
            part.unlink()
    return paths


def run(paths: Paths, streamed: bool, chunk_rows: int, sample_rows: int) -> tuple[float, float]:
    shutil.rmtree(paths.expectations_dir, ignore_errors=True)
    knobs = {"stream_above_mb": 0, "chunk_rows": chunk_rows, "sample_rows": sample_rows} if streamed else {}
    params = from_dict({**PARAMS, "validate": {"stream_above_mb": 1e9, **knobs}})
    return forked(validate.run, params, paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs=2, default=[1_000_000, 3_000_000], help="the table, the larger one")
    ap.add_argument("--chunk-rows", type=int, default=200_000)
    ap.add_argument("--sample-rows", type=int, default=500_000)
    ap.add_argument("--quick", action="store_true", help="20,000 and 60,000 rows (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.chunk_rows, args.sample_rows = [20_000, 60_000], 5_000, 8_000
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MEDFLOW_SALT", "bench")
    before = load()
    small, big = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        first = table(Path(tmp) / "small", small)
        mb = (first.root / "data" / "labs.csv").stat().st_size / 2**20
        mem_s, mem_mb = run(first, False, args.chunk_rows, args.sample_rows)
        print(f"{small:>10,} rows ({mb:,.0f} MB)  in memory  {mem_s:7.1f} s  peak RSS {mem_mb:7.0f} MiB", flush=True)
        str_s, str_mb = run(first, True, args.chunk_rows, args.sample_rows)
        print(f"{small:>10,} rows ({mb:,.0f} MB)  streamed   {str_s:7.1f} s  peak RSS {str_mb:7.0f} MiB", flush=True)
        shutil.rmtree(first.root)
        second = table(Path(tmp) / "big", big)
        big_mb = (second.root / "data" / "labs.csv").stat().st_size / 2**20
        big_s, big_peak = run(second, True, args.chunk_rows, args.sample_rows)
        print(
            f"{big:>10,} rows ({big_mb:,.0f} MB)  streamed   {big_s:7.1f} s  peak RSS {big_peak:7.0f} MiB", flush=True
        )
    ratio = str_s / mem_s
    write(
        {
            "name": "validate_streamed",
            "ours": round(str_s, 3),
            "baseline": round(mem_s, 3),
            "ratio": round(ratio, 4),
            "unit": f"s to validate {small:,} rows",
            "target": 1.5,
            "pairs": 1,
            "spread": [round(ratio, 4), round(ratio, 4)],
            "load": {"before": before, "after": load(), "cores": os.cpu_count()},
            "rows": args.rows,
            "chunk_rows": args.chunk_rows,
            "sample_rows": args.sample_rows,
            "peak_rss_mb": {"in_memory": round(mem_mb), "streamed": round(str_mb), "streamed_largest": round(big_peak)},
            "largest_s": round(big_s, 2),
            "mem_ratio": round(big_peak / str_mb, 4),
            "mem_target": 1.1,
        }
    )
    print(
        f"validate_streamed: {ratio:.3f}x the in-memory time on {small:,} rows (target <= 1.5) in "
        f"{str_mb / mem_mb:.2f}x its memory; {big:,} rows streamed in {big_peak / str_mb:.3f}x the memory of "
        f"{small:,} (target <= 1.1)"
    )
    print("ratios written to bench/results/validate_streamed.json")


if __name__ == "__main__":
    main()
