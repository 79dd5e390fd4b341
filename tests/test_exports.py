"""Tables shaped the way real exports are, run as a user types the commands: R's write.csv (row names in a column
with no name, outcomes as TRUE/FALSE), and a trial's follow-up export whose outcome two dates and a flag decide
together (as in ACTG 320: time to AIDS or death, time to death, death): validate stops on the follow-up time, and
once it is accepted the gate sees what no one-column screen can."""

import csv
import json
import re

import numpy as np
import pandas as pd
import pytest
from usercmd import scratch_clone, sh

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

SALT = {"MEDFLOW_SALT": "exports-salt"}


@pytest.fixture(scope="module")
def env(prefect_server):
    """The session's Prefect server rather than a temporary one started per run (seconds each): this module is
    about tables."""
    return SALT | {"PREFECT_API_URL": prefect_server}


@pytest.fixture(scope="module")
def project(tmp_path_factory, migrated_mlflow_db):
    root = scratch_clone(tmp_path_factory.mktemp("exports"), migrated_mlflow_db)
    (root / "data").mkdir(exist_ok=True)
    return root


def r_export(n: int = 300, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(25, 85, n)
    bmi = rng.normal(27, 4, n).round(1)
    risk = (age - 55) / 10 + (bmi - 27) / 4 + rng.normal(0, 1, n)
    df = pd.DataFrame({"age": age, "bmi": bmi, "smoker": rng.choice(["never", "former", "current"], n),
                       "readmitted": np.where(risk > 0.5, "TRUE", "FALSE")})  # fmt: skip
    df.index = np.arange(1, n + 1)  # R's row names, 1..n
    return df


def follow_up(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    died = rng.random(n) < 0.12
    event = rng.random(n) < 0.3
    days_to_death = rng.integers(200, 1200, n)
    days = np.where(event, (days_to_death * rng.uniform(0.2, 0.95, n)).astype(int), days_to_death)
    return pd.DataFrame({"age": rng.integers(20, 80, n), "cd4": rng.normal(80, 30, n).round(1),
                         "arm": rng.choice(["A", "B"], n), "days": days, "days_to_death": days_to_death,
                         "died": died.astype(int), "outcome": np.where(event | died, "event", "censored")})  # fmt: skip


def printed_fix(stderr: str, key: str) -> str:
    """The -P option for key that medflow's one-line error printed, exactly as printed."""
    found = re.findall(rf"-P '{re.escape(key)}=\[[^\]]*\]'", stderr)
    assert found, stderr[-2000:]
    return found[-1]


def test_an_r_export_stops_on_its_row_names_and_runs_with_the_printed_fix(project, env):
    root = project
    # R's write.csv: a header cell "" over the row names, strings quoted, logicals as TRUE/FALSE.
    r_export().to_csv(root / "data" / "r_export.csv", index_label="", quoting=csv.QUOTE_NONNUMERIC)
    # TRUE is YAML's boolean: medflow matches it to the label as the table spells it.
    args = ("-P data.source=data/r_export.csv -P data.target=readmitted -P data.positive_class=TRUE "
            "-P register.model_name=r-export -P validate.data_docs=false")  # fmt: skip
    stopped = sh(f".venv/bin/medflow step validate {args}", root, check=False, **SALT)
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    (line,) = [x for x in stopped.stderr.splitlines() if "error:" in x]
    assert "column 'Unnamed: 0' (no name in the header): its 300 values are the rows' numbers" in line
    assert not (root / "expectations" / "r_export.json").exists()

    fix = printed_fix(line, "data.exclude")
    assert fix == """-P 'data.exclude=["Unnamed: 0"]'"""
    done = sh(f".venv/bin/medflow run {args} {fix}", root, **env)
    assert "registered r-export v1" in done.stdout + done.stderr
    schema = json.loads((root / "artifacts" / "clean" / "schema.json").read_text())
    assert schema["classes"] == ["not_TRUE", "TRUE"] and "Unnamed: 0" not in schema["numeric"]
    summary = json.loads((root / "artifacts" / "validate" / "summary.json").read_text())
    assert summary["columns"]["excluded"] == ["Unnamed: 0"] and summary["rows_valid"] == 300


def test_a_model_whose_perfect_score_rests_on_follow_up_columns_is_not_promoted(project, env):
    root = project
    follow_up().to_csv(root / "data" / "followup.csv", index=False)
    args = ("-P data.source=data/followup.csv -P data.target=outcome -P data.positive_class=event "
            "-P 'data.exclude=[]' -P register.model_name=follow-up -P validate.data_docs=false")  # fmt: skip
    # validate stops on the follow-up time by its name and its relation to the outcome; accepted, the run goes on.
    stopped = sh(f".venv/bin/medflow run {args}", root, check=False, **env)
    (line,) = [x for x in stopped.stderr.splitlines() if "error:" in x]
    assert stopped.returncode == 2 and "suspected follow-up time in 1 column(s): 'days' (ROC-AUC 0.7" in line, line
    args += " " + printed_fix(line, "validate.accept_leakage")
    first = sh(f".venv/bin/medflow run {args}", root, **env)
    out = first.stdout + first.stderr
    # validate's one-column screen lets every other column through: each alone predicts the outcome weakly.
    summary = json.loads((root / "artifacts" / "validate" / "summary.json").read_text())
    assert summary["leakage_suspects"] == [] and list(summary["leakage"]["accepted"]) == ["days"]
    (line,) = [x for x in out.splitlines() if x.startswith("registered follow-up v1")]
    # The accepted follow-up time is the user's decision; the gate names the two columns that leak with it.
    assert "not promoted: suspected target leakage: test roc_auc=1.0000 rests on 2 feature(s)" in line, line
    for feature in ("days_to_death", "died"):
        assert re.search(rf"\b{feature} 0\.\d{{3}}", line), (feature, line)
    gate = json.loads((root / "artifacts" / "register" / "gate.json").read_text())
    assert sorted(gate["leak_check"]["suspects"]) == ["days_to_death", "died"]

    fix = printed_fix(line, "data.exclude")
    again = sh(f".venv/bin/medflow run {args} {fix}", root, **env)
    (line,) = [x for x in (again.stdout + again.stderr).splitlines() if x.startswith("registered follow-up v2")]
    assert "suspected target leakage" not in line
    assert json.loads((root / "artifacts" / "register" / "gate.json").read_text())["leak_check"] is None
