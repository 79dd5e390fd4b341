"""A new user's own table to its first champion, as typed on a fresh clone: the demo's floor does not apply to it, a
refusal names the key that refused and a rerun after changing it decides again; the card tells the truth after
every alias move (gate, promote, rollback) and lists the columns data.exclude dropped. Tests run in file order on
one clone."""

import getpass
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from usercmd import scratch_clone, sh, user_env

from medflow.data.synthetic import synthetic_cohort
from medflow.tracking.registry import fit_description

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

TABLE = "-P data.source=data/visits.csv -P data.target=outcome -P data.patient_id=mrn -P data.positive_class=disease"
TABLE += " -P 'data.identifiers=[name, dob, phone]' -P 'data.exclude=[outcome_code]' -P register.model_name=first"
# A small net, few epochs; the baseline comparison is opened: this is about floors and cards, not the model.
TINY = "-P train.max_epochs=3 -P train.patience=2 -P 'train.hidden=[8]' -P evaluate.n_boot=200"
TINY += " -P register.gate.n_boot=200 -P register.gate.baseline_margin=1 -P validate.data_docs=false"
SALT = {"MEDFLOW_SALT": "first-champion-salt"}


@pytest.fixture(scope="module")
def env(prefect_server):
    """The session's Prefect server rather than a temporary one started per run (seconds each): this module is
    about floors and cards; the Ctrl-C test below keeps the temporary server, as a terminal user meets it."""
    return SALT | {"PREFECT_API_URL": prefect_server}


@pytest.fixture(scope="module")
def clone(tmp_path_factory, migrated_mlflow_db):
    root = scratch_clone(tmp_path_factory.mktemp("first") / "medflow", migrated_mlflow_db)
    df = synthetic_cohort(n_patients=80, seed=5)
    df["outcome_code"] = df["outcome"].map({"disease": 1, "healthy": 0, "inconclusive": 2})  # recorded after it
    (root / "data").mkdir(exist_ok=True)
    df.to_csv(root / "data" / "visits.csv", index=False)
    return root


def registry(root):
    from mlflow import MlflowClient

    store = f"sqlite:///{root / 'mlruns/mlflow.db'}"
    return MlflowClient(store, registry_uri=store)


def card_of(root, version: str) -> str:
    return registry(root).get_model_version("first", version).description


def test_a_new_table_starts_from_no_floor_and_a_changed_floor_is_decided_again(clone, env):
    done = sh(f".venv/bin/medflow run {TABLE} {TINY} -P register.min_primary=0.999", clone, timeout=900, **env)
    out = done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("registered first v1 (not promoted: test_roc_auc="), last
    assert "is below the floor 0.9990 (register.min_primary; -P register.min_primary=VALUE changes it" in last
    # The first run of a table says what it inferred and what to do with it; MLflow's own chatter stays in the log.
    count = len(json.loads((clone / "expectations/visits.json").read_text())["expectations"])
    assert (
        f"wrote expectations/visits.json: {count} expectations inferred from this table, which later runs validate "
        "against; review them (less expectations/visits.json)" in done.stdout
    )
    assert "Registered model" not in out and "Created version" not in out

    # The floor params.yaml ships is the demo's: on this table there is none, and the gate decides again.
    again = sh(".venv/bin/medflow run -P 'register.min_primary={breast_cancer: 0.95}'", clone, timeout=600, **env)
    assert "steps to run: register" in again.stdout + again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("registered first v1 (champion: "), again.stdout[-2000:]
    gate = json.loads((clone / "artifacts/register/gate.json").read_text())
    assert gate["thresholds"]["min_primary"] is None and gate["decision"] == "promoted"
    tags = registry(clone).get_model_version("first", "1").tags
    assert (
        tags["medflow.gate.1"].startswith("not promoted: test_roc_auc=")
        and "register.min_primary" in (tags["medflow.gate.1"])
    )
    assert tags["medflow.gate.2"].startswith("promoted: ") and tags["medflow.gate"] == tags["medflow.gate.2"]
    assert {a: str(v) for a, v in registry(clone).get_registered_model("first").aliases.items()} == {"champion": "1"}
    nothing = sh(".venv/bin/medflow run", clone, **env)
    assert "nothing to do" in nothing.stdout and "first v1 (champion)" in nothing.stdout


def test_the_card_lists_excluded_columns_and_where_the_version_stands(clone):
    card = json.loads((clone / "artifacts/register/model_card.json").read_text())
    assert card["features"]["excluded"]["outcome_code"].startswith("data.exclude: dropped as the table was read")
    md = card_of(clone, "1")
    assert "`outcome_code` (data.exclude: dropped as the table was read" in md
    assert "## Registry status\nCurrent alias: `champion`." in md
    assert f"| gate | none → v1 | {getpass.getuser()} |" in md


def test_every_alias_move_rewrites_the_cards_it_touches(clone, env):
    # A second version, from an exploratory run: challenger at most, whatever its metrics.
    done = sh(f".venv/bin/medflow run {TINY} -P train.max_epochs=2 -P register.promote=never", clone, **env)
    assert "registered first v2 (not promoted: " in done.stdout
    assert "Current alias: `challenger`." in card_of(clone, "2")

    sh(".venv/bin/medflow promote first 2 --reason 'reviewed on site B, ticket 42'", clone)
    v2, v1 = card_of(clone, "2"), card_of(clone, "1")
    assert "Current alias: `champion`." in v2 and "## Gate decision\nNot promoted: " in v2
    assert f"| promote | v1 → v2 | {getpass.getuser()} | reviewed on site B, ticket 42 |" in v2
    assert "Current alias: none." in v1 and "| promote | v1 → v2 |" in v1
    logged = registry(clone).download_artifacts(registry(clone).get_model_version("first", "2").run_id, "model_card.md")
    # The run's copy says the same: whole, or as far as MLflow's description column holds it.
    assert fit_description(Path(logged).read_text()) == v2

    sh(".venv/bin/medflow rollback first --reason 'v2 misses site C'", clone)
    v2, v1 = card_of(clone, "2"), card_of(clone, "1")
    assert "Current alias: `champion`." in v1 and "| rollback | v2 → v1 |" in v1 and "v2 misses site C" in v1
    assert "Current alias: none." in v2


def test_ctrl_c_after_register_names_the_last_step_that_finished(clone):
    summary = clone / "artifacts/register/summary.json"
    # On a busy box the signal can land after the run has ended (exit 0: nothing was left to interrupt), which
    # says nothing of the message under test: that run is tried again, at most twice.
    for _ in range(3):
        summary.unlink()
        proc = subprocess.Popen(
            ["bash", "-c", "exec .venv/bin/medflow run -P register.gate.n_boot=300"], cwd=clone,
            env=user_env(clone, **SALT), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while not summary.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            break
    assert proc.returncode == 130, err[-3000:]
    # Prefect's client can still say, after medflow's line, that its server is gone: medflow's own line is the one.
    (line,) = [x for x in err.splitlines() if x.startswith("medflow run: error: ")] or [err[-3000:]]
    # The summary is written just before register returns and records itself in dvc.lock: the signal lands there,
    # or after it, as the flow publishes its summary or ends.
    said = r"medflow run: error: (the run(, after register finished,)?|register) interrupted \(SIGINT\)"
    assert re.match(said, line), line
