"""What the gate's gradient-boosted-tree baseline adds to a default pipeline: every step on a generated 100,000-row,
32-column table (bench/common.py's lab_table), once with register.gate.tree_baseline at its defaults and once with
it null, interleaved in one process (each step forked, the libraries already imported, as in `medflow run`), each
run in a fresh project on a copy of one migrated MLflow store.

tree_baseline: seconds of the pipeline with trees / without; target <= 1.2 (the trees' share <= 20%). The JSON
also holds the register step's own seconds with and without (median), and tree_share: their difference over the
pipeline without trees.

    .venv/bin/python bench/tree_baseline.py [--rows 100000] [--pairs 3] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from common import forked, lab_table, paired, write, write_csv

from medflow import tracking
from medflow.params import from_dict
from medflow.paths import STEPS, Paths
from medflow.pipeline import run_step

PARAMS = {
    "data": {"source": "data/labs.csv", "target": "outcome", "positive_class": "yes", "identifiers": ["visit"]},
    "register": {"model_name": "bench-trees", "min_primary": None},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--epochs", type=int, help="train.max_epochs (default: params' own, early stopping decides)")
    ap.add_argument("--quick", action="store_true", help="2,000 rows, 2 epochs, one pair, no warm-up (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.pairs, args.epochs = 2000, 1, 2
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for step in STEPS:  # imported once here, as `medflow run` imports them once
        __import__(f"medflow.steps.{step}")
    train = {"max_epochs": args.epochs, "patience": args.epochs} if args.epochs else {}
    register: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        template = Paths(root=Path(tmp) / "template")
        tracking.configure(template)  # one migrated MLflow store, copied into each project
        table = write_csv(lab_table(args.rows), Path(tmp) / "labs.csv")
        runs = iter(range(10_000))

        def pipeline(trees: bool) -> float:
            paths = Paths(root=Path(tmp) / f"run-{next(runs)}")
            (paths.root / "data").mkdir(parents=True)
            paths.mlruns.mkdir(parents=True)
            shutil.copy(template.mlflow_db, paths.mlflow_db)
            shutil.copy(table, paths.root / "data" / "labs.csv")
            tracking.configure(paths)
            gate = {} if trees else {"tree_baseline": None}
            params = from_dict({**PARAMS, "train": train, "register": {**PARAMS["register"], "gate": gate}})
            total = 0.0
            for step in STEPS:
                seconds, _ = forked(run_step, step, params, paths)
                total += seconds
            register["with" if trees else "without"].append(seconds)
            shutil.rmtree(paths.root)
            return total

        result = paired(
            "tree_baseline",
            lambda: pipeline(True),
            lambda: pipeline(False),
            args.pairs,
            1.2,
            warmup=not args.quick,
            rows=args.rows,
            epochs=args.epochs,
        )
    timed = {k: v[0 if args.quick else 1 :] for k, v in register.items()}  # past the warm-up runs
    register_s = {k: statistics.median(v) for k, v in timed.items()}
    result["register_s"] = {k: round(v, 3) for k, v in register_s.items()}
    # The trees' own share of the pipeline: the register step's difference, steadier than the whole runs' ratio,
    # whose training and validation swing by more than the trees cost on a loaded box.
    result["tree_share"] = round((register_s["with"] - register_s["without"]) / result["baseline"], 4)
    write(result)
    print(
        f"tree_baseline: register step {register_s['with']:.2f} s with trees, {register_s['without']:.2f} s without: "
        f"the trees take {result['tree_share']:.1%} of the pipeline without them"
    )


if __name__ == "__main__":
    main()
