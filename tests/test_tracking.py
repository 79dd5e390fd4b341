import os
import re
import subprocess
import sys

import pytest

from medflow import tracking
from medflow.lineage import lineage
from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.scanner import PhiLeak
from medflow.promotion.gate import Comparison, decide, subgroup_regressions
from medflow.tracking import store


@pytest.fixture
def params(project):
    (project.data_dir).mkdir()
    (project.data_dir / "t.csv").write_text("a,y\n1,no\n2,yes\n")
    return Params.model_validate({"data": {"source": "data/t.csv", "target": "y"}, "train": {"lr": 3e-4}})


def git(root, *args):
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def test_import_configures_nothing():
    probe = "import os, sys, medflow.tracking\nprint('mlflow' in sys.modules, os.getenv('MLFLOW_TRACKING_URI'))"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "None"]


def test_configure_uses_the_project_store_unless_overridden(project, tmp_path, monkeypatch):
    other = Paths(root=tmp_path / "other")
    assert tracking.configure(project) == f"sqlite:///{project.mlflow_db}"
    # MLflow exports the URI it is given; that export must not pin later projects to this one.
    assert tracking.configure(other) == f"sqlite:///{other.mlflow_db}"
    assert other.mlruns.is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.configure(project) == "http://mlflow.internal:5000"
    assert tracking.configure(other) == "http://mlflow.internal:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.configure(project) == f"sqlite:///{project.mlflow_db}"


def test_client_refuses_to_guess_a_store(monkeypatch):
    monkeypatch.setattr(store, "_exported", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError, match="configure"):
        store.client()


def test_start_run_logs_flat_params_and_lineage(project, params, monkeypatch):
    import mlflow

    monkeypatch.setenv("MEDFLOW_FLOW_RUN_ID", "flow-123")
    run_id = tracking.start_run(params, project, "train")
    assert mlflow.active_run() is None
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.run_name == "train"
    assert run.data.params["train.lr"] == "0.0003"
    assert run.data.params["validate.range_margin"] == str(params.validate_.range_margin)  # by alias
    tags = run.data.tags
    assert tags["medflow.params_hash"] == params.digest()
    assert tags["medflow.git_commit"] == "unknown"  # tmp_path is not a repository
    assert tags["medflow.data_dvc_md5"] == "none"
    assert tags["medflow.flow_run_id"] == "flow-123"
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "JOB"  # under a flow run
    assert "mlflow.source.git.commit" not in tags  # no repository, no commit to show
    assert "`tabular_mlp` for model `medflow-breast-cancer` on `t`" in tags["mlflow.note.content"]
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == params.register.model_name  # one experiment per pipeline
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (project.mlruns / "artifacts").as_uri()


def test_default_run_name_tells_model_data_and_time_apart(project, params, monkeypatch):
    import mlflow

    monkeypatch.delenv("MEDFLOW_FLOW_RUN_ID", raising=False)
    run_id = tracking.start_run(params, project)
    run = mlflow.MlflowClient().get_run(run_id)
    data = lineage(params, project)["medflow.data_md5"][:8]
    assert re.fullmatch(rf"medflow-breast-cancer-data\.{data}-\d{{8}}-\d{{6}}", run.info.run_name)
    assert run.data.tags["mlflow.source.type"] == "LOCAL"


def test_lineage_reads_git_and_dvc(project, params, monkeypatch):
    import hashlib

    monkeypatch.delenv("MEDFLOW_FLOW_RUN_ID", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    (project.root / ".gitignore").write_text("mlruns/\n")
    (project.root / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    git(project.root, "init", "-q")
    git(project.root, "add", ".")
    git(project.root, "commit", "-qm", "init")
    sha = git(project.root, "rev-parse", "HEAD")
    tags = lineage(params, project)
    assert tags == {
        "medflow.git_commit": sha,
        "medflow.data_md5": hashlib.md5((project.data_dir / "t.csv").read_bytes()).hexdigest(),
        "medflow.data_dvc_md5": "0123456789abcdef0123456789abcdef.dir",
        "medflow.params_hash": params.digest(),
        "medflow.flow_run_id": "none",
        "medflow.dvc_experiment": "none",
        "medflow.data_batches": "none",  # no monitored batch was added to the data
    }
    (project.root / "params.yaml").write_text("seed: 1\n")
    assert lineage(params, project)["medflow.git_commit"] == f"{sha}-dirty"


def test_log_epoch_and_metrics(project, params):
    import mlflow

    run_id = tracking.start_run(params, project, "train")
    for epoch in range(3):
        tracking.log_epoch(run_id, {"train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.5 + epoch / 10}, epoch)
    tracking.log_metrics(run_id, {"test_roc_auc": 0.97})
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert client.get_run(run_id).data.metrics["test_roc_auc"] == 0.97
    tracking.end_run(run_id)
    assert client.get_run(run_id).info.status == "FINISHED"


def test_epochs_logged_asynchronously_land_in_the_store_of_their_run(project, params, tmp_path, migrated_mlflow_db):
    """A process that logs epochs, then opens another project's store (a test after a test, a monitor after a
    training run), has the epochs MLflow still holds written to the run's own store, not the one it opened next."""
    import shutil

    from mlflow import MlflowClient

    run_id = tracking.start_run(params, project, "train")
    tracking.log_epoch(run_id, {"train_loss": 0.5}, 1)
    other = Paths(root=tmp_path / "other")
    other.mlruns.mkdir(parents=True)
    shutil.copy(migrated_mlflow_db, other.mlflow_db)
    tracking.configure(other)
    uri = f"sqlite:///{project.mlflow_db}"
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5)]


def test_writes_pass_the_scanner_first(project, params, tmp_path):
    import mlflow

    run_id = tracking.start_run(params, project, "train")
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text('{"rows": 12, "auc": 0.97}\n')
    tracking.log_artifacts(run_id, report, "report")
    tracking.log_artifacts(run_id, report / "summary.json")
    (report / "notes.md").write_text("worst case: patient MRN0001234\n")
    with pytest.raises(PhiLeak, match="mrn"):
        tracking.log_artifacts(run_id, report, "leaky")
    with pytest.raises(PhiLeak, match="email"):
        tracking.set_tags(run_id, {"owner": "jane.doe@example.org"})
    tracking.set_tags(run_id, {"stage": "smoke"})
    client = mlflow.MlflowClient()
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["report", "summary.json"]
    assert "owner" not in client.get_run(run_id).data.tags
    leaky = Params.model_validate({**params.as_dict(), "data": {"source": "data/t.csv", "identifiers": ["MRN0001234"]}})
    with pytest.raises(PhiLeak, match="params of run 'x'"):
        tracking.start_run(leaky, project, "x")


def _paired(cand_noise: float, ref_noise: float, n: int = 200):
    """Synthetic scores on the same rows: the label follows x, each model adds its own share of noise."""
    import numpy as np

    from medflow.evaluation.metrics import paired_bootstrap_delta

    rng = np.random.default_rng(0)
    x, noise = rng.normal(size=n), rng.normal(size=n)
    y = (x > 0).astype(int)

    def proba(w: float):
        p = 1 / (1 + np.exp(-(x + w * noise)))
        return np.c_[1 - p, p]

    return paired_bootstrap_delta(y, proba(cand_noise), proba(ref_noise), n_boot=500)


def comparison(delta, test="superiority", margin=0.01, reference="champion v1"):
    return Comparison(reference, delta, test, margin)


def test_equal_scores_are_refused_under_superiority_and_accepted_under_non_inferiority():
    tie = _paired(0.5, 0.5)
    assert (tie.delta, tie.ci_low, tie.ci_high) == (0.0, 0.0, 0.0)
    refused = decide("test_roc_auc", 0.95, 0.9, "1", comparison(tie))
    assert not refused.promoted and "lower bound above +0.0000: not met, champion v1 stays" in refused.reason
    accepted = decide("test_roc_auc", 0.95, 0.9, "1", comparison(tie, "non_inferiority", 0.01))
    assert (
        accepted.promoted
        and "non-inferiority, margin 0.01 (register.gate.margin) needs the lower bound above -0.0100: met"
        in (accepted.reason)
    )


def test_a_clearly_better_candidate_passes_superiority_and_a_worse_one_fails_non_inferiority():
    better, worse = _paired(0.2, 1.5), _paired(1.5, 0.2)
    assert better.ci_low > 0 > worse.ci_high
    assert decide("test_roc_auc", 0.95, 0.9, "1", comparison(better)).promoted
    refused = decide("test_roc_auc", 0.95, 0.9, "1", comparison(worse, "non_inferiority", 0.05))
    assert not refused.promoted and f"95% CI [{worse.ci_low:+.4f}, {worse.ci_high:+.4f}]" in refused.reason


@pytest.mark.parametrize(
    ("value", "floor", "kwargs", "promoted", "says"),
    [
        (0.85, 0.9, {}, False, "below the floor 0.9000"),
        (0.85, None, {}, True, "there is no champion and no baseline"),  # floors are optional per project
        (float("nan"), None, {}, False, "not a number"),
        (0.95, 0.9, {"sensitivity": 0.7, "min_sensitivity": 0.8}, False, "sensitivity at the threshold (0.7000)"),
        (0.95, 0.9, {"champion_version": "1"}, False, "champion v1 could not be re-scored"),
        (0.95, 0.9, {"champion_version": "1", "mismatch": "input schema differs"}, False, "metrics alone cannot"),
    ],
)
def test_gate_floors_and_missing_evidence(value, floor, kwargs, promoted, says):
    decision = decide("test_roc_auc", value, floor, **kwargs)
    assert decision.promoted is promoted and says in decision.reason


def test_a_required_superiority_over_a_baseline_refuses_what_the_other_rules_promote():
    better, tie = _paired(0.2, 1.5), _paired(0.5, 0.5)
    key = "register.gate.require_superiority_over"

    def over_trees(delta):
        return Comparison("baseline gradient_boosted_trees", delta, "superiority", 0.0, test_key=key)

    passes = decide("test_roc_auc", 0.95, 0.9, "1", comparison(better), required=over_trees(better))
    assert passes.promoted and passes.reason.startswith(f"delta {better.metric} vs baseline gradient_boosted_trees")
    refused = decide("test_roc_auc", 0.95, 0.9, "1", comparison(better), required=over_trees(tie))
    assert not refused.promoted and f"superiority ({key}) needs the lower bound above +0.0000: not met;" in (
        refused.reason
    )
    missing = decide("test_roc_auc", 0.95, 0.9, None, comparison(better), required=f"{key} names trees, not a ...")
    assert not missing.promoted and missing.reason.startswith(f"{key} names trees")


def test_a_subgroup_regression_refuses_a_better_candidate():

    def report(values):
        groups = [{"group": g, "roc_auc": v} for g, v in values.items()]
        return {"primary_metric": "roc_auc", "groups": [*groups, {"group": "site=C", "patients": "<10"}]}

    lost = subgroup_regressions(report({"site=A": 0.99, "site=B": 0.80}), report({"site=A": 0.9, "site=B": 0.9}), 0.05)
    assert lost == ("subgroup site=B roc_auc falls from 0.9000 to 0.8000 (more than the tolerance 0.05)",)
    decision = decide("test_roc_auc", 0.95, 0.9, "1", comparison(_paired(0.2, 1.5)), regressions=lost)
    assert not decision.promoted and ": met; subgroup site=B" in decision.reason


def test_training_data_is_logged_as_a_dataset_input_without_rows(project, params):
    import json

    import mlflow

    from medflow.data.features import Schema

    for step, summary in (("split", {"rows": {"train": 7, "val": 2, "test": 1}}), ("validate", {"rows_in": 11})):
        project.step_dir(step).mkdir(parents=True)
        project.summary(step).write_text(json.dumps(summary))
    schema = Schema(target="y", classes=["no", "yes"], numeric=["a"], categorical=["c"])
    run = tracking.open_run(params, project)
    run.describe()
    run_id = run.run_id
    tracking.log_training_data(run_id, run.tags, params, project, schema)
    (logged,) = mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs
    ds = logged.dataset
    assert (ds.name, ds.digest) == ("t", lineage(params, project)["medflow.data_md5"][:16])
    assert json.loads(ds.source)["uri"] == "data/t.csv"
    assert json.loads(ds.profile) == {
        "num_rows": 10,
        "train_rows": 7,
        "val_rows": 2,
        "test_rows": 1,
        "rows_in": 11,
        "num_features": 2,
    }
    assert [c["type"] for c in json.loads(ds.schema)["mlflow_colspec"]] == ["double", "string"]
    assert [t.value for t in logged.tags if t.key == "mlflow.data.context"] == ["training"]


def test_a_locked_store_is_retried_with_backoff_then_named(monkeypatch):
    from mlflow.exceptions import MlflowException

    sleeps = []
    monkeypatch.setattr(store.time, "sleep", sleeps.append)
    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked", "TEMPORARILY_UNAVAILABLE")
        return x * 2

    assert store.retry_locked(flaky, 21) == 42 and len(calls) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0  # doubling, with jitter

    def locked():
        raise MlflowException("(sqlite3.OperationalError) database is locked", "TEMPORARILY_UNAVAILABLE")

    with pytest.raises(store.StoreBusy, match=r"`database is locked` 6 times") as err:
        store.retry_locked(locked)
    assert err.value.__cause__ is None and "\n" not in str(err.value)
    assert len(sleeps) == 2 + store.LOCK_RETRIES - 1

    def broken():
        raise MlflowException("no such table: experiments")

    with pytest.raises(MlflowException, match="no such table"):  # only a lock is worth waiting for
        store.retry_locked(broken)
    assert len(sleeps) == 2 + store.LOCK_RETRIES - 1
