"""The pipeline's train step (MLflow run and metrics, checkpoints, best weights, model bundle) against the same
loop without any of it, on the same table: what tracking and checkpointing cost. Both read the split and fit the
preprocessing; the baseline then runs medflow's loop with no checkpoint, no per-epoch callback and no progress.
Default: 20,000 rows x 32 numeric columns, tabular_mlp, 30 epochs (no early stop), one thread, the default
train.checkpoint_interval_s. Target: ratio <= 1.02. Writes bench/results/logging_overhead.json.

    .venv/bin/python bench/logging_overhead.py [--rows 20000 --epochs 30 --pairs 11]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import paired, table_project, timed

from medflow.data.manifest import load_split
from medflow.models.tabular import build
from medflow.params import from_dict
from medflow.pipeline import run_step
from medflow.steps import train
from medflow.training.loop import FitConfig, fit, seed_everything
from medflow.training.settings import LOOP_SETTINGS


def bare_loop(params, paths) -> None:
    df, schema = load_split(paths)
    x, y, _, config, _ = train.features(params, paths, df, schema)
    seed_everything(params.seed, params.train.deterministic)
    settings = params.train.model_dump(include=LOOP_SETTINGS)
    cfg = FitConfig(**settings, seed=params.seed, device="cpu", checkpoint=None)
    fit(build(**config), x["train"], y["train"], x["val"], y["val"], cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=30)
    # 11, not 5: one 3-s training varies by ~5% from the next, and the effect measured is ~2%.
    ap.add_argument("--pairs", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="2,000 rows, 3 epochs, one pair (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.epochs, args.pairs = 2000, 3, 1
    torch.set_num_threads(1)
    settings = {"max_epochs": args.epochs, "patience": args.epochs, "threads": 1}
    params = from_dict({"data": {"source": "bench", "target": "outcome"}, "train": settings})
    with tempfile.TemporaryDirectory() as tmp:
        paths = table_project(Path(tmp), args.rows)
        paired(
            "logging_overhead",
            lambda: timed(run_step, "train", params, paths),
            lambda: timed(bare_loop, params, paths),
            args.pairs,
            target=1.02,
            warmup=not args.quick,
            rows=args.rows,
            epochs=args.epochs,
            checkpoint_interval_s=params.train.checkpoint_interval_s,
        )


if __name__ == "__main__":
    main()
