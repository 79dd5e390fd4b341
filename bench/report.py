"""The tables of bench/results/*.json, as bench/README.md prints them (markdown): every ratio,
then scaling's wall seconds and peak RSS per step and size.

.venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = [
    "pipeline_overhead",
    "pipeline_overhead_long",
    "rerun_cached",
    "validate_throughput",
    "validate_streamed",
    "logging_overhead",
    "train_vs_bare",
    "train_vs_seed",
    "cold_start",
    "evaluate_bootstrap",
    "survival_cindex",
    "survival_cindex_ci",
    "scaling",
]


def row(r: dict) -> str:
    met = "yes" if r["ratio"] <= r["target"] else "**no**"
    lo, hi = r["spread"]
    load = r.get("load", {}).get("before", ["?"])[0]
    return (
        f"| {r['name']} | {r['ours']:,.3f} | {r['baseline']:,.3f} | {r['unit']} | **{r['ratio']:.3f}** "
        f"({lo:.3f}-{hi:.3f}) | <= {r['target']} | {met} | {r['pairs']} | {load} |"
    )


def main() -> None:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    results = [found[n] for n in ORDER if n in found and "spread" in found[n]]
    print("| benchmark | ours | baseline | unit | ratio (min-max) | target | met | pairs | load (1 min) |")
    print("|---|---:|---:|---|---|---|---|---:|---:|")
    for r in results:
        print(row(r))
    scaling = found.get("scaling")
    if scaling and "steps" in scaling:
        sizes = [str(r) for r in scaling["rows"]]
        print(f"\n| step | {' | '.join(f'{int(r):,} rows: s / peak MiB' for r in sizes)} |")
        print("|---|" + "---:|" * len(sizes))
        for step, by_rows in scaling["steps"].items():
            cells = [f"{by_rows[r]['wall_s']:.2f} / {by_rows[r]['peak_rss_mb']:,}" for r in sizes]
            print(f"| {step} | {' | '.join(cells)} |")
    missing = [n for n in ORDER if n not in {r["name"] for r in results}]
    if missing:
        print(f"\nnot in bench/results/: {', '.join(missing)}")


if __name__ == "__main__":
    main()
