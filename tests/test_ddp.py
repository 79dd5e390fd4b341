"""DDP: `torchrun --nproc_per_node 2 -m medflow.steps.train` (gloo on CPU) matches one process.

With train.batch_size the global batch, rank r's batch i is the r-th half of the one-process batch i, and
DDP averages the two halves' gradients: the same update up to float summation order. Tolerance: 1e-4 on the
best validation loss; the best epoch and accuracy must agree exactly.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient
from test_training import step_params, write_upstream

from medflow.paths import Paths
from medflow.steps import train

TRAIN = {"max_epochs": 12, "patience": 12, "hidden": [16], "dropout": 0.0, "class_weights": "none", "batch_size": 32}


def two_gloo_ranks(root: Paths, timeout: float) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m medflow.steps.train --root ROOT`, checked to succeed; the
    project's own store, not the test session's MLFLOW_TRACKING_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "medflow.steps.train", "--root", str(root.root)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.full  # two torchrun ranks and one process, each training: `make test`, not `make test-fast`
def test_two_gloo_ranks_match_one_process_and_only_rank_0_writes(tmp_path, project):
    root = Paths(root=tmp_path / "ddp")
    root.mlruns.mkdir(parents=True)
    shutil.copy(project.mlflow_db, root.mlflow_db)
    write_upstream(root, n=200)  # 140 training rows: equal shards of 70
    write_upstream(project, n=200)
    single = train.run(step_params(**TRAIN), project)

    (root.root / "params.yaml").write_text(yaml.safe_dump(step_params(**TRAIN).as_dict()))
    done = two_gloo_ranks(root, timeout=120)

    ddp = json.loads(root.summary("train").read_text())
    assert ddp["world_size"] == 2 and ddp["train_rows"] == single["train_rows"]
    assert ddp["best_epoch"] == single["best_epoch"]
    assert ddp["best_val_accuracy"] == single["best_val_accuracy"]
    assert ddp["best_val_loss"] == pytest.approx(single["best_val_loss"], abs=1e-4)
    # Rank 0 alone printed, logged and saved: no progress line twice, one MLflow run, no checkpoint left.
    shown = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(shown) == len(set(shown)) and f"{ddp['epochs_run']}/{TRAIN['max_epochs']}" in shown
    assert "train: run_id=" in done.stdout
    client = MlflowClient(f"sqlite:///{root.mlflow_db}")
    runs = client.search_runs([client.get_run(ddp["run_id"]).info.experiment_id])
    assert [r.info.run_id for r in runs] == [ddp["run_id"]]
    assert (root.model_bundle / "weights.pt").exists() and not root.checkpoint.exists()
