"""Champion moves recorded in the registry, rolled back and traced, through the `medflow` executable."""

import json

import pytest
from test_register import cohort, make_project, train_and_register
from usercmd import scratch_clone, sh

from medflow import tracking
from medflow.paths import Paths

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`


def test_history_rollback_and_lineage_as_a_user_types_them(tmp_path, migrated_mlflow_db):
    from mlflow import MlflowClient

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    train_and_register(work, "medflow-breast-cancer", 0.95)  # v1: champion by the gate
    train_and_register(work, "medflow-breast-cancer", 0.97)  # v2: beats v1, champion by the gate
    root = scratch_clone(tmp_path / "proj", work.mlflow_db)

    no_back = sh(".venv/bin/medflow rollback nothing-here", root, check=False)
    assert no_back.returncode == 2 and "rollback: model nothing-here has no champion" in no_back.stderr

    done = sh(".venv/bin/medflow rollback medflow-breast-cancer --reason 'v2 misses site B'", root)
    assert (
        done.stdout.strip().splitlines()[-1]
        == "medflow-breast-cancer champion rolled back from v2 to v1; see: medflow history medflow-breast-cancer"
    )
    tracking.configure(Paths(root=root))
    assert MlflowClient().get_registered_model("medflow-breast-cancer").aliases["champion"] == 1

    # v1 replaced no champion: a second rollback has nowhere to go, and says so in one line.
    again = sh(".venv/bin/medflow rollback medflow-breast-cancer", root, check=False)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "rollback: medflow-breast-cancer v1 replaced no champion (see medflow history" in again.stderr
    assert "nothing was moved; `medflow promote medflow-breast-cancer VERSION --reason ...`" in again.stderr
    assert "fix the input or parameter" not in again.stderr

    sh(".venv/bin/medflow promote medflow-breast-cancer 2 --reason 'site B fixed, ticket 7'", root)
    moves = tracking.history("medflow-breast-cancer")
    assert [(m["how"], m["from"], m["to"]) for m in moves] == [
        ("gate", None, "1"),
        ("gate", "1", "2"),
        ("rollback", "2", "1"),
        ("promote", "1", "2"),
    ]
    assert moves[2]["reason"] == "v2 misses site B" and moves[3]["reason"] == "site B fixed, ticket 7"
    assert all(m["who"] and m["at"] for m in moves)
    tags = MlflowClient().get_registered_model("medflow-breast-cancer").tags
    assert json.loads(tags["medflow.history.000003"]) == moves[2]  # kept in the registry, one compact JSON each

    printed = sh(".venv/bin/medflow history medflow-breast-cancer", root).stdout.strip().splitlines()
    assert len(printed) == 4 and "rollback v2 -> v1" in printed[2] and printed[2].endswith(": v2 misses site B")

    lineage = sh(".venv/bin/medflow lineage models:/medflow-breast-cancer@champion", root).stdout
    by_number = sh(".venv/bin/medflow lineage models:/medflow-breast-cancer/2", root).stdout
    assert lineage == by_number and lineage.startswith("medflow-breast-cancer v2\n")
    version = MlflowClient().get_model_version("medflow-breast-cancer", "2")
    for tag in ("medflow.data_dvc_md5", "medflow.git_commit", "medflow.params_hash", "medflow.flow_run_id"):
        assert version.tags[tag] in lineage
    assert f"MLflow run:          {version.run_id}" in lineage
    bad = sh(".venv/bin/medflow lineage models:/medflow-breast-cancer/9", root, check=False)
    assert bad.returncode == 2 and "lineage: model medflow-breast-cancer has no version 9" in bad.stderr


def test_a_move_recorded_last_is_not_recorded_again(tmp_path, migrated_mlflow_db):
    """register finishing a registration killed after its alias moved calls record_move a second time."""
    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    tracking.configure(work)
    tracking.ensure_model("again", "test model", {})
    assert tracking.record_move("again", None, "1", "gate", "first")["n"] == 1
    assert tracking.record_move("again", "1", "2", "gate", "better", "artifacts/register/gate.json")["from"] == "1"
    assert tracking.record_move("again", "2", "2", "gate", "better") is None  # already the last move
    assert [m["to"] for m in tracking.history("again")] == ["1", "2"]
    assert tracking.history("again")[1]["report"] == "artifacts/register/gate.json"


def test_registry_commands_load_the_mlflow_client_and_not_the_training_stack(project):
    """history, lineage, promote and rollback import medflow.tracking: scikit-learn (via the gate's metrics) and torch
    cost them ~0.8 s of CPU each (2.65 s -> 1.9 s for `medflow history`)."""
    import subprocess
    import sys

    tracking.configure(project)
    tracking.ensure_model("light", "test model", {})
    probe = (
        "import sys; from medflow.cli import main; "
        f"main(['--root', {str(project.root)!r}, 'history', 'light']); "
        "print(sorted(m for m in ('sklearn', 'torch', 'prefect', 'great_expectations') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines() == ["light: no champion moves recorded", "[]"], done.stderr[-2000:]

    missing = subprocess.run(
        [sys.executable, "-m", "medflow.cli", "--root", str(project.root), "history", "none-such"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "history: the registry has no model none-such" in missing.stderr
