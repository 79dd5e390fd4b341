"""`make test-fast`'s one end-to-end run: the real executable on a scratch clone of the demo, shrunk to seconds of
training. `make test` runs the README's own `make run` instead (tests/test_readme.py), so this is deselected there."""

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
    again = sh(".venv/bin/medflow run", root)
    assert again.stdout.startswith("nothing to do: every step is up to date"), again.stdout[-2000:]
