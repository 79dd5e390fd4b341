"""End to end: the Prefect flow and `dvc repro` run the same steps and leave the same results."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medflow.data.synthetic import synthetic_cohort
from medflow.paths import STEPS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dvc_yaml_the_step_list_and_the_flow_agree():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STEPS)
    for name, stage in stages.items():
        assert stage["cmd"] == f"PATH=.venv/bin:$PATH medflow step {name}"
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage["outs"]]
        assert all(o.startswith(f"artifacts/{name}") for o in outs), (name, outs)
        assert name in stage["params"]
        assert (REPO / "src/medflow/steps" / f"{name}.py").exists()
    flow_src = (REPO / "flows/pipeline.py").read_text()
    # The flow runs what medflow.staleness.plan lists: STEPS from the first stage DVC finds stale.
    assert "run_step" in flow_src and "plan(params, paths" in flow_src


def test_each_step_is_finished_and_recorded_before_the_next_one_starts(tmp_path, monkeypatch, prefect_server):
    """As under `dvc repro`: a step's outputs and its dvc.lock record are written before the next step starts."""
    import time

    from prefect.settings import temporary_settings

    sys.path.insert(0, str(REPO))
    monkeypatch.delitem(sys.modules, "flows.pipeline", raising=False)
    from flows import pipeline as flow

    events = []

    def run_step(name, params, paths):
        events.append(f"start {name}")
        return {}

    def record_in_dvc(paths, steps):
        time.sleep(0.2)  # slower than handing over: a record written beside the next step would come after it
        events.append(f"recorded {steps[0]}")

    monkeypatch.setattr(flow, "run_step", run_step)
    monkeypatch.setattr(flow, "record_in_dvc", record_in_dvc)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    with temporary_settings(updates={"api.url": prefect_server}):
        flow.pipeline(root=str(tmp_path), steps=list(STEPS))
    assert events == [e for name in STEPS for e in (f"start {name}", f"recorded {name}")]


def medflow_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))}
    env.update(PATH=f"{BIN}:{env['PATH']}", PREFECT_HOME=str(root / ".prefect"), MEDFLOW_SALT="test-salt")
    return env


def sh(args: list[str], root: Path) -> str:
    done = subprocess.run(args, cwd=root, env=medflow_env(root), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, migrated_mlflow_db) -> Path:
    """A copy of the project (dvc.yaml, flow, code) on a small synthetic cohort, as its own DVC repo."""
    root = tmp_path_factory.mktemp("proj")
    for item in ("dvc.yaml", "params.tuned.yaml", "flows", ".dvcignore"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    shutil.copytree(REPO / "src/medflow", root / "src/medflow", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    synthetic_cohort(n_patients=150, seed=3).to_csv(root / "data/visits.csv", index=False)
    # The project's own params.yaml (breast cancer): the test points it at the cohort with -P, as a user would.
    params = (REPO / "params.yaml").read_text()
    params = params.replace("max_epochs: 200", "max_epochs: 15").replace("patience: 20", "patience: 5")
    (root / "params.yaml").write_text(params)
    (root / "mlruns").mkdir()
    shutil.copy(migrated_mlflow_db, root / "mlruns/mlflow.db")
    sh(["dvc", "init", "--no-scm", "-q"], root)
    sh(["dvc", "config", "core.analytics", "false"], root)
    sh(["dvc", "add", "data", "-q"], root)
    return root


def results(root: Path) -> tuple[pd.DataFrame, dict]:
    metrics = json.loads((root / "artifacts/evaluate/metrics.json").read_text())
    return pd.read_csv(root / "artifacts/split/manifest.csv"), metrics


BRING_YOUR_OWN = [
    "-P", "data.source=data/visits.csv", "-P", "data.target=outcome", "-P", "data.patient_id=mrn",
    "-P", "data.identifiers=[name, dob, phone]", "-P", "data.positive_class=disease",
    "-P", "register.model_name=visits", "-P", "register.min_primary=0.5",
    # 23 test patients: the paired CI against the logistic regression is ~0.13 wide, wider than the default margin.
    "-P", "register.gate.baseline_margin=0.1",
]  # fmt: skip


@pytest.mark.e2e  # the real executable on a project copy: `make test`, not `make test-fast`
def test_flow_and_dvc_repro_agree_and_dvc_status_is_clean(tiny_project):
    root = tiny_project
    out = sh(["medflow", "run", *BRING_YOUR_OWN], root)
    assert "registered visits v1 (champion" in out
    written = yaml.safe_load((root / "params.yaml").read_text())
    assert written["data"]["identifiers"] == ["name", "dob", "phone"]
    assert "# The single source of parameters" in (root / "params.yaml").read_text()  # comments kept
    assert "epoch" in out
    status = sh(["dvc", "status"], root)
    assert "up to date" in status, status
    manifest_flow, metrics_flow = results(root)
    assert manifest_flow.groupby("patient_key")["split"].nunique().max() == 1

    # Nothing changed: the flow runs no step and registers nothing.
    again = sh(["medflow", "run"], root)
    assert "registered" not in again

    shutil.rmtree(root / "artifacts")
    sh(["dvc", "repro", "--force"], root)
    manifest_dvc, metrics_dvc = results(root)
    pd.testing.assert_frame_equal(manifest_flow, manifest_dvc)
    assert metrics_flow == metrics_dvc
    assert "up to date" in sh(["dvc", "status"], root)


@pytest.mark.e2e  # the real executable on a project copy: `make test`, not `make test-fast`
def test_param_override_is_recorded_and_reruns_only_from_the_changed_step(tiny_project):
    root = tiny_project
    out = sh(["medflow", "run", "-P", "evaluate.primary_metric=pr_auc"], root)
    assert "steps to run: evaluate, register" in out
    assert yaml.safe_load((root / "params.yaml").read_text())["evaluate"]["primary_metric"] == "pr_auc"
    assert "up to date" in sh(["dvc", "status"], root)


def test_a_misspelt_parameter_fails_before_anything_runs(tiny_project):
    done = subprocess.run(
        ["medflow", "run", "-P", "train.lrr=0.1"],
        cwd=tiny_project,
        env=medflow_env(tiny_project),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "train.lrr" in done.stderr and "Extra inputs are not permitted" in done.stderr


@pytest.mark.e2e  # the real executable on a project copy: `make test`, not `make test-fast`
def test_no_patient_value_reaches_mlflow_prefect_or_dvc_records(tiny_project):
    """Raw identifiers may sit in data/ and artifacts/ (local, git-ignored), nowhere else."""
    root = tiny_project
    raw = pd.read_csv(root / "data/visits.csv", dtype=str)
    phi = {v for col in ("mrn", "name", "phone", "dob") for v in raw[col].dropna().unique()}
    stores = [root / "mlruns", root / ".prefect", root / "dvc.lock", root / "expectations"]
    files = [f for s in stores for f in ([s] if s.is_file() else s.rglob("*")) if f.is_file()]
    assert any(f.name == "mlflow.db" for f in files) and any(f.suffix == ".md" for f in files)
    assert any(f.name == "index.html" and "data_docs" in f.parts for f in files)  # validate's, logged by train
    leaks = []
    for f in files:
        blob = f.read_bytes()
        leaks += [(f.relative_to(root), v) for v in phi if v.encode() in blob]
    assert not leaks, leaks[:5]


def test_data_dvc_is_checked_for_the_demo_and_updated_for_new_tables(tmp_path):
    from dvc.repo import Repo

    from medflow.params import from_dict
    from medflow.paths import Paths
    from medflow.staleness import DataVersionError, ensure_data

    def recorded_as_is() -> str:
        """data.dvc's hash, once DVC finds data/ to be what it records."""
        with Repo(str(tmp_path)) as repo:
            assert repo.status(targets=[str(tmp_path / "data.dvc")]) == {}
        return yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]["md5"]

    paths = Paths(root=tmp_path)
    Repo.init(str(tmp_path), no_scm=True).close()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    recorded = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]["md5"]
    ensure_data(from_dict({}), paths)  # a fresh clone: the recorded demo is rebuilt and matches data.dvc
    assert recorded_as_is() == recorded

    ensure_data(from_dict({"data": {"source": "synthetic_cohort", "target": "outcome"}}), paths)
    assert recorded_as_is() != recorded

    # Rows added to the demo file by hand are a new data version, not an error.
    (paths.data_dir / "synthetic_cohort.csv").unlink()
    with (paths.data_dir / "breast_cancer.csv").open("a") as fh:
        fh.write((paths.data_dir / "breast_cancer.csv").read_text().splitlines()[1] + "\n")
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    ensure_data(from_dict({}), paths)
    assert recorded_as_is() != recorded

    # A clone whose data.dvc records a version the demo cannot rebuild must fetch it: nothing is left in the way.
    shutil.rmtree(paths.data_dir)
    with pytest.raises(DataVersionError, match="dvc pull"):
        ensure_data(from_dict({}), paths)
    assert not paths.data_dir.exists()

    # A fresh clone whose first run asks for the built-in cohort: the demo is checked, then the cohort recorded.
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    ensure_data(from_dict({"data": {"source": "synthetic_cohort", "target": "outcome"}}), paths)
    assert {p.name for p in paths.data_dir.iterdir()} == {"breast_cancer.csv", "synthetic_cohort.csv"}
    assert recorded_as_is() != recorded
