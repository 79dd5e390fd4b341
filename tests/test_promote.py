"""`medflow promote` as a user types it: the only way an experiment's version becomes champion."""

import getpass
import shutil
from datetime import UTC, datetime

import pytest
from test_register import cohort, make_project, train_and_register
from usercmd import scratch_clone, sh

from medflow import tracking
from medflow.paths import Paths

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`


def test_promote_moves_champion_and_records_who_when_why_and_the_previous(tmp_path, migrated_mlflow_db, monkeypatch):
    from mlflow import MlflowClient

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    train_and_register(work, "exp", 0.95)
    monkeypatch.setenv("DVC_EXP_NAME", "armed-vows")  # a better model, from `dvc exp run`: challenger only
    assert train_and_register(work, "exp", 0.99)["promoted"] is False
    monkeypatch.delenv("DVC_EXP_NAME")
    root = scratch_clone(tmp_path / "proj")
    (root / "mlruns").mkdir(exist_ok=True)
    shutil.copy(work.mlflow_db, root / "mlruns" / "mlflow.db")

    # As the gate does: a project requiring card fields never promotes a version whose card leaves them empty.
    default = (root / "params.yaml").read_text()
    required = "breast_cancer: [intended_use, population, setting, intended_users, outcome, horizon]"
    assert required in default
    (root / "params.yaml").write_text(default.replace(required, "cohort: [intended_use, horizon]"))
    undeclared = sh(".venv/bin/medflow promote exp 2 --reason 'reviewed'", root, check=False)
    assert undeclared.returncode == 2 and "Traceback" not in undeclared.stderr
    assert len(undeclared.stderr.strip().splitlines()) == 1
    assert (
        "promote: exp v2: register.card.intended_use, register.card.horizon empty (register.require_card_fields)"
        in undeclared.stderr
    )
    (root / "params.yaml").write_text(default)

    before = datetime.now(UTC).replace(microsecond=0)
    done = sh(".venv/bin/medflow promote exp 2 --reason 'reviewed on site B data, ticket 42'", root)
    assert done.stdout.strip().splitlines()[-1].startswith("exp v2 is now champion (was v1)")
    tracking.configure(Paths(root=root))
    client = MlflowClient()
    assert client.get_registered_model("exp").aliases == {"champion": 2}  # the challenger alias went with it
    tags = client.get_model_version("exp", "2").tags
    assert tags["medflow.promoted_by"] == getpass.getuser()
    assert tags["medflow.promoted_reason"] == "reviewed on site B data, ticket 42"
    assert tags["medflow.previous_champion"] == "1"
    assert datetime.fromisoformat(tags["medflow.promoted_at"]) >= before

    refused = sh(".venv/bin/medflow promote exp 7 --reason x", root, check=False)
    assert refused.returncode == 2 and "promote: model exp has no version 7" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    with pytest.raises(ValueError, match="already the champion"):
        tracking.promote("exp", "2", "again")
    no_reason = sh(".venv/bin/medflow promote exp 1", root, check=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    assert client.get_registered_model("exp").aliases == {"champion": 2}
