"""One writer of the store concurrency test: a model ranking as its AUC says, a run with that test metric, then
medflow's register step.

Usage: python register_worker.py PROJECT_ROOT MODEL_NAME AUC (the store comes from MLFLOW_TRACKING_URI).
"""

import json
import sys
from pathlib import Path

from test_register import save_model  # this script's folder, tests/, is first on sys.path

from medflow import tracking
from medflow.params import Params
from medflow.paths import Paths
from medflow.steps import register


def main(root: str, name: str, auc: str) -> None:
    paths = Paths(root=Path(root))
    save_model(paths, float(auc))
    gate = {"baseline_margin": 1.0}  # the race is the point here, not the baseline comparison
    register_params = {"model_name": name, "min_primary": 0.5, "gate": gate}
    params = Params.model_validate({"data": {"source": "data/cohort.csv", "target": "y"}, "register": register_params})
    run_id = tracking.start_run(params, paths)
    metrics = {"test_roc_auc": float(auc)}
    tracking.log_metrics(run_id, metrics)
    paths.train_run.write_text(json.dumps({"run_id": run_id}))
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(metrics))
    summary = register.run(params, paths)
    tracking.end_run(run_id)
    print(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:])
