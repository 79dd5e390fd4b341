"""`make test-fast`'s one end-to-end run: the real executable on a scratch clone of the demo, shrunk to seconds of
training. `make test` runs the README's own `make run` instead (tests/test_readme.py), so this is deselected there."""

import json

import pytest
from usercmd import scratch_clone, sh

pytestmark = pytest.mark.smoke

SHRUNK = (
    "-P train.max_epochs=3 -P train.patience=2 -P 'train.hidden=[8]' -P evaluate.n_boot=100 -P register.gate.n_boot=100"
)


def test_the_demo_runs_end_to_end_and_a_rerun_has_nothing_to_do(tmp_path, migrated_mlflow_db):
    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    done = sh(f".venv/bin/medflow run {SHRUNK}", root, timeout=600)
    assert "registered medflow-breast-cancer v1 (" in done.stdout, done.stdout[-2000:]
    # The default pipeline's gate scores gradient-boosted trees beside the other baselines, with the paired CI.
    gate = json.loads((root / "artifacts/register/gate.json").read_text())
    trees = gate["models"]["baseline gradient_boosted_trees"]
    assert 0.9 < trees["ci_low"] <= trees["roc_auc"] <= trees["ci_high"] <= 1
    d = gate["baseline_deltas"]["baseline gradient_boosted_trees"]
    assert d["ci_low"] <= d["delta"] <= d["ci_high"] and d["n_boot"] == 100
    again = sh(".venv/bin/medflow run", root)
    assert again.stdout.startswith("nothing to do: every step is up to date"), again.stdout[-2000:]
