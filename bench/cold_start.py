"""`medflow --help` against `python -c "import torch, pandas"`, each a fresh process: what the CLI costs before it
does anything. Target: ratio <= 0.2 (the CLI imports neither). Writes bench/results/cold_start.json.

    .venv/bin/python bench/cold_start.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import paired, run_seconds

BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one pair, no warm-up (what the tests run)")
    args = ap.parse_args()
    here = Path.cwd()
    paired(
        "cold_start",
        lambda: run_seconds([str(BIN / "medflow"), "--help"], here),
        lambda: run_seconds([sys.executable, "-c", "import torch, pandas"], here),
        1 if args.quick else args.pairs,
        target=0.2,
        warmup=not args.quick,
    )


if __name__ == "__main__":
    main()
