import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import medflow
from medflow import tracking
from medflow.data.columns import LABEL, PATIENT_KEY, ROW_ID
from medflow.data.features import Preprocessor, Schema, coerce_features
from medflow.data.sources import read_table
from medflow.lineage import lineage
from medflow.models.bundle import Predictor, save_bundle
from medflow.models.tabular import build
from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.scanner import PhiLeak, scan_text
from medflow.steps import register
from medflow.tracking.registry import fit_description

SCHEMA = Schema(
    target="y",
    classes=["no", "yes"],
    numeric=["a", "b"],
    categorical=["c"],
    patient_id="pid",
    dropped={"pid": "patient identifier", "email": "direct identifier"},
)


def cohort(n: int = 300) -> pd.DataFrame:
    """The label follows `a`; `b` is noise: a model's weight on `b` sets how much worse than perfect it ranks."""
    rng = np.random.default_rng(0)
    a = rng.normal(50, 10, n).round(2)
    return pd.DataFrame(
        {
            "pid": [f"MRN{7000000 + i}" for i in range(n)],
            "email": [f"patient{i}@example.org" for i in range(n)],
            "a": a.astype(str),
            "b": rng.normal(size=n).round(3).astype(str),
            "c": rng.choice(["x", "z"], n),
            "y": np.where(a > 50, "yes", "no"),
        }
    )


def save_model(paths: Paths, auc: float) -> None:
    """A linear model as train would leave it, ranking worse as `auc` falls (weight 10 * (1 - auc) on noise), so
    that the gate's paired test on the test split orders versions as their stand-in metrics do."""
    df = coerce_features(pd.read_csv(paths.data_dir / "cohort.csv", dtype=str), SCHEMA)
    pre = Preprocessor(SCHEMA.numeric, SCHEMA.categorical).fit(df)
    config = {"name": "tabular_mlp", "n_in": len(pre.feature_names), "n_classes": 2, "hidden": [], "dropout": 0.0}
    model = build(**config)
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.zero_()
        model.net[0].weight[1, pre.feature_names.index("a")] = 1.0
        model.net[0].weight[1, pre.feature_names.index("b")] = 10 * (1 - auc)
    save_bundle(paths.model_bundle, model, config, pre, SCHEMA)


def make_project(root: Path, db: Path, df: pd.DataFrame) -> Paths:
    """What validate, clean, split and train leave: the cleaned table, the split manifest and a model bundle."""
    paths = Paths(root=root)
    paths.mlruns.mkdir(parents=True)
    shutil.copy(db, paths.mlflow_db)
    paths.data_dir.mkdir()
    df.to_csv(paths.data_dir / "cohort.csv", index=False)
    n = len(df)
    keys = [f"key{i:04d}" for i in range(n)]  # one row per patient, keyed as clean would (never the raw id)
    cleaned = coerce_features(df, SCHEMA)
    cleaned.insert(0, ROW_ID, np.arange(n))
    cleaned.insert(1, PATIENT_KEY, keys)
    cleaned[LABEL] = (df["y"] == "yes").astype("int64").to_numpy()
    paths.cleaned.parent.mkdir(parents=True)
    cleaned.to_parquet(paths.cleaned)
    SCHEMA.save(paths.schema)
    split = np.where(np.arange(n) < 0.7 * n, "train", np.where(np.arange(n) < 0.8 * n, "val", "test"))
    paths.step_dir("split").mkdir(parents=True)
    pd.DataFrame({"row_id": np.arange(n), "patient_key": keys, "split": split}).to_csv(paths.manifest, index=False)
    rows = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    paths.summary("split").write_text(json.dumps({"rows": rows}))
    save_model(paths, 0.95)
    return paths


@pytest.fixture(scope="module")
def proj(tmp_path_factory, migrated_mlflow_db) -> Paths:
    """One store and bundle for the module: every test registers under its own model name."""
    return make_project(tmp_path_factory.mktemp("register"), migrated_mlflow_db, cohort())


def params_for(name: str, floor: float = 0.9, accept: tuple[str, ...] = ("a",), **gate) -> Params:
    # These tests are about the registry; a logistic regression ranks this cohort perfectly, so the baseline
    # comparison is opened wide here (its own tests are below). `a` decides the label by construction, so a model
    # at ROC-AUC 1 rests on it: accepted, as a user would accept a predictor validate flagged.
    gate = {"baseline_margin": 1.0, **gate}
    return Params.model_validate(
        {
            "data": {"source": "data/cohort.csv", "target": "y"},
            "validate": {"accept_leakage": list(accept)},
            "register": {"model_name": name, "min_primary": floor, "gate": gate},
        }
    )


def train(paths: Paths, name: str, auc: float, floor: float = 0.9, accept: tuple[str, ...] = ("a",), **gate) -> Params:
    """Stands in for train + evaluate: a bundle, a run, run.json and metrics.json."""
    params = params_for(name, floor, accept, **gate)
    save_model(paths, auc)
    run_id = tracking.start_run(params, paths, "train")
    paths.train_run.write_text(json.dumps({"run_id": run_id}))
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics = {
        "test_roc_auc": auc,
        "test_roc_auc_ci_low": auc - 0.02,
        "test_roc_auc_ci_high": min(auc + 0.01, 1.0),
    }
    paths.metrics.write_text(json.dumps({**metrics, "test_accuracy": 0.9, "test_f1": 0.88, "n_test": 6}))
    tracking.log_metrics(run_id, metrics)  # as evaluate does: the run holds the metrics, not the version
    return params


def train_and_register(
    paths: Paths, name: str, auc: float, floor: float = 0.9, accept: tuple[str, ...] = ("a",), **gate
) -> dict:
    return register.run(train(paths, name, auc, floor, accept, **gate), paths)


def aliases(name: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return {alias: str(v) for alias, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_first_version_becomes_champion_with_lineage_and_metrics(proj):
    from mlflow import MlflowClient

    summary = train_and_register(proj, "first", 0.95)
    assert summary == {
        "model_name": "first",
        "version": "1",
        "promoted": True,
        "reason": summary["reason"],
        "champion_version": "1",
        "primary_metric": "test_roc_auc",
        "primary_value": 0.95,
        "run_id": summary["run_id"],
    }
    assert "no champion" in summary["reason"]
    assert json.loads(proj.summary("register").read_text()) == summary
    assert aliases("first") == {"champion": "1"}

    client = MlflowClient()
    version = client.get_model_version("first", "1")
    run = client.get_run(summary["run_id"])
    recorded = lineage(params_for("first"), proj)
    for tags in (version.tags, run.data.tags):
        assert recorded.items() <= tags.items()
        assert tags["medflow.gate"].startswith("promoted: ")
    assert version.tags["medflow.state"] == "complete" and version.tags["medflow.dataset"] == "cohort"
    assert "test_roc_auc" not in version.tags and run.data.metrics["test_roc_auc"] == 0.95
    assert version.run_id == summary["run_id"]
    model = client.get_registered_model("first")
    assert "trained by medflow on `cohort`" in model.description
    assert {"medflow.primary_metric": "test_roc_auc", "medflow.task": "binary"}.items() <= model.tags.items()
    # The card whole, or its leading sections as far as MLflow's description column holds them.
    card = (proj.step_dir("register") / "model_card.md").read_text()
    assert version.description == fit_description(card) and version.description.startswith(card[:3000])
    assert "model_card.md" in [a.path for a in client.list_artifacts(summary["run_id"])]


def test_version_keeps_the_lineage_recorded_at_training(proj, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MEDFLOW_FLOW_RUN_ID", "flow-that-trained")
    params = train(proj, "lineage", 0.95)
    monkeypatch.setenv("MEDFLOW_FLOW_RUN_ID", "flow-that-registered")
    summary = register.run(params, proj)
    client = MlflowClient()
    assert client.get_model_version("lineage", summary["version"]).tags["medflow.flow_run_id"] == "flow-that-trained"
    assert client.get_run(summary["run_id"]).data.tags["medflow.flow_run_id"] == "flow-that-trained"


def test_worse_version_is_challenger_and_champion_stays(proj):
    train_and_register(proj, "worse", 0.97)
    summary = train_and_register(proj, "worse", 0.95)
    assert (summary["promoted"], summary["version"], summary["champion_version"]) == (False, "2", "1")
    assert "delta roc_auc vs champion v1 = -" in summary["reason"] and "not met, champion v1 stays" in summary["reason"]
    assert aliases("worse") == {"champion": "1", "challenger": "2"}


def test_a_tie_never_promotes(proj):
    train_and_register(proj, "equal", 0.96)
    summary = train_and_register(proj, "equal", 0.96)
    assert (summary["promoted"], summary["champion_version"]) == (False, "1")
    assert "= +0.0000 (95% CI [+0.0000, +0.0000]); superiority" in summary["reason"]
    assert aliases("equal") == {"champion": "1", "challenger": "2"}
    assert train_and_register(proj, "equal", 0.99)["champion_version"] == "3"


def test_a_name_whose_first_version_missed_the_gate_still_registers(proj):
    """MLflow 3.17 reports a missing alias as INVALID_PARAMETER_VALUE: that must read as "no champion"."""
    tracking.configure(proj)
    assert tracking.version_by_alias("never-registered", "champion") is None
    assert train_and_register(proj, "bricked", 0.80)["promoted"] is False
    assert tracking.version_by_alias("bricked", "champion") is None
    second = train_and_register(proj, "bricked", 0.93)
    third = train_and_register(proj, "bricked", 0.99)
    assert [(s["version"], s["promoted"]) for s in (second, third)] == [("2", True), ("3", True)]
    assert aliases("bricked") == {"challenger": "1", "champion": "3"}


def test_registering_a_run_again_returns_its_version_and_moves_nothing(proj):
    from mlflow import MlflowClient

    params = train(proj, "rerun", 0.95)
    first = register.run(params, proj)
    train_and_register(proj, "rerun", 0.93)  # v2, challenger
    (proj.step_dir("register") / "model_card.md").unlink()  # dvc repro empties the step folder first
    proj.train_run.write_text(json.dumps({"run_id": first["run_id"]}))
    proj.metrics.write_text(json.dumps({"test_roc_auc": 0.95}))
    again = register.run(params, proj)
    assert (again["version"], again["promoted"], again["champion_version"]) == ("1", True, "1")
    assert again["reason"].startswith("run already registered as v1")
    assert aliases("rerun") == {"champion": "1", "challenger": "2"}
    assert len(MlflowClient().search_model_versions("name = 'rerun'")) == 2
    assert (proj.step_dir("register") / "model_card.md").read_text().startswith("# Model card: rerun v1")


KILLED_IN_REGISTER = """
import json, os, signal, sys
from medflow import tracking
from medflow.params import Params
from medflow.paths import Paths
from medflow.steps import register

# kill -9 at the moment the version has its tags but neither card nor alias
tracking.describe_version = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
register.run(Params.model_validate(json.loads(sys.argv[2])), Paths(root=sys.argv[1]))
"""


def test_a_registration_killed_midway_is_no_candidate_and_the_next_run_finishes_it(proj):
    from mlflow import MlflowClient

    train_and_register(proj, "killed", 0.95)
    params = train(proj, "killed", 0.99)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    args = [sys.executable, "-c", KILLED_IN_REGISTER, str(proj.root), json.dumps(params.as_dict())]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr[-2000:]
    client = MlflowClient()
    half = client.get_model_version("killed", "2")
    assert half.tags["medflow.state"] == "registering" and not half.description
    assert aliases("killed") == {"champion": "1"}
    assert tracking.version_by_alias("killed", "champion").version == "1"

    summary = register.run(params, proj)
    assert (summary["version"], summary["promoted"]) == ("2", True)
    finished = client.get_model_version("killed", "2")
    assert finished.tags["medflow.state"] == "complete" and finished.description.startswith("# Model card: killed v2")
    assert aliases("killed") == {"champion": "2"}
    assert len(client.search_model_versions("name = 'killed'")) == 2
    models = client.search_logged_models([client.get_run(summary["run_id"]).info.experiment_id])
    assert sum(m.source_run_id == summary["run_id"] for m in models) == 1  # the model was logged once


def test_a_version_left_half_made_by_an_older_run_is_removed_or_completed(proj, monkeypatch):
    from mlflow import MlflowClient

    from medflow.tracking import registry

    def killed(*args):
        raise KeyboardInterrupt  # leaves what the SIGKILL above leaves: no code of register runs after it

    train_and_register(proj, "orphan", 0.95)
    for _ in range(2):  # v2 and v3: cut short before their card and alias, and their runs never come back
        with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
            m.setattr(tracking, "describe_version", killed)
            train_and_register(proj, "orphan", 0.97)
    client = MlflowClient()
    client.set_registered_model_alias("orphan", "champion", "3")  # as if killed right after its alias moved
    fresh = train_and_register(proj, "orphan", 0.80)  # not old enough yet: another process may still be at work
    assert {int(v.version) for v in client.search_model_versions("name = 'orphan'")} == {1, 2, 3, 4}
    monkeypatch.setattr(registry, "STALE_S", 0.0)
    params = train(proj, "orphan", 0.80)
    summary = register.run(params, proj)
    assert {int(v.version) for v in client.search_model_versions("name = 'orphan'")} == {1, 3, 4, 5}
    assert client.get_model_version("orphan", "3").tags["medflow.state"] == "complete"
    assert (fresh["version"], summary["version"], aliases("orphan")["champion"]) == ("4", "5", "3")


def test_experiments_register_as_challenger_at_most(proj, monkeypatch):
    train_and_register(proj, "explore", 0.95)
    monkeypatch.setenv("DVC_EXP_NAME", "armed-vows")  # what `dvc exp run` sets in every stage
    summary = train_and_register(proj, "explore", 0.99)
    assert (summary["promoted"], summary["champion_version"]) == (False, "1")
    assert "run from a DVC experiment" in summary["reason"] and "medflow promote" in summary["reason"]
    assert tracking.get_version("explore", "2").tags["medflow.dvc_experiment"] == "armed-vows"
    monkeypatch.delenv("DVC_EXP_NAME")
    params = Params.model_validate(
        {
            **train(proj, "explore", 0.99).as_dict(),
            "register": {"model_name": "explore", "min_primary": 0.9, "promote": "never"},
        }
    )
    summary = register.run(params, proj)
    assert not summary["promoted"] and "register.promote is never" in summary["reason"]
    assert aliases("explore") == {"champion": "1", "challenger": "3"}


def test_another_dataset_or_schema_is_never_promoted_on_metrics(proj, monkeypatch):
    train_and_register(proj, "inputs", 0.95)
    monkeypatch.setattr(register, "dataset_name", lambda source: "cohort_site_b")
    summary = train_and_register(proj, "inputs", 0.99)
    assert not summary["promoted"]
    assert "dataset `cohort_site_b` differs from champion v1's: metrics alone cannot compare" in summary["reason"]
    monkeypatch.undo()
    monkeypatch.setattr(register, "schema_hash", lambda schema: "another-schema")
    summary = train_and_register(proj, "inputs", 0.99)
    assert not summary["promoted"] and "input schema differs" in summary["reason"]
    gate = json.loads((proj.step_dir("register") / "gate.json").read_text())
    assert gate["comparison"] is None and "champion v1 not re-scored: input schema differs" in gate["champion_note"]
    assert aliases("inputs")["champion"] == "1"


def test_below_the_floor_is_not_champion_even_when_first(proj):
    summary = train_and_register(proj, "floor", 0.85)
    assert (summary["promoted"], summary["champion_version"]) == (False, None)
    assert "below the floor" in summary["reason"]
    assert aliases("floor") == {"challenger": "1"}


def test_model_card_has_names_and_counts_but_no_patient_values(proj):
    train_and_register(proj, "card", 0.95)
    card = (proj.step_dir("register") / "model_card.md").read_text()
    for expected in (
        "`a`",
        "`b`",
        "`c`",
        "Dataset: `cohort`",
        "| train | 210 |",
        "0.9500 [0.9300, 0.9600]",
        "Promoted to `champion`",
        "medflow.params_hash",
        "## Limitations",
        "`pid` (patient identifier)",
    ):
        assert expected in card
    raw = cohort()
    assert not any(v in card for v in [*raw["pid"], *raw["email"]])
    assert scan_text(card, forbidden=raw["pid"]) == []


def test_the_card_ranks_columns_by_permutation_importance_and_holds_no_row_value(proj, tmp_path):
    import re

    from medflow.evaluation import permutation
    from medflow.steps.evaluate import _explanations
    from medflow.tasks import named

    save_model(proj, 0.95)
    cleaned = pd.read_parquet(proj.cleaned)
    test = cleaned.iloc[int(0.8 * len(cleaned)) :]
    predictor = Predictor(proj.model_bundle)
    report = {
        "explanations": _explanations(predictor, test, tmp_path, 0),
        "permutation_importance": permutation.importance(
            named("classification"), "roc_auc", test[LABEL].to_numpy(), test, SCHEMA.features, predictor.outputs,
            test[PATIENT_KEY].to_numpy(), 2000, 200, 0,
        ),
    }  # fmt: skip
    written = proj.step_dir("evaluate") / "report.json"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(json.dumps(report))
    try:
        train_and_register(proj, "permutation", 0.95)
    finally:
        written.unlink()  # the module's other registrations read no evaluation report
    card = (proj.step_dir("register") / "model_card.md").read_text()
    head = "| feature | permutation drop [95% CI] | mean abs. contribution |"
    assert head in card, card
    table = card.split(head)[1].split("\n\n")[0].strip().splitlines()[1:]
    # `a` decides the label: it leads, its interval above 0, beside its mean |contribution|.
    assert len(table) == 3 and re.fullmatch(r"\| `a` \| 0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] \| \d+\.\d{4} \|", table[0])
    assert float(table[0].split("[")[1].split(",")[0]) > 0
    raw = cohort()
    numbers = set(re.findall(r"-?\d+\.\d+", card + (proj.step_dir("register") / "model_card.json").read_text()))
    assert not numbers & {*raw["a"], *raw["b"]}
    assert scan_text(card, forbidden=raw["pid"]) == []


def test_registry_model_scores_raw_rows_in_a_fresh_process(proj, tmp_path):
    """models:/NAME@champion loads with medflow's shipped code only (the installed package is hidden)."""
    train_and_register(proj, "roundtrip", 0.95)
    csv = tmp_path / "incoming.csv"
    rows = cohort(8)
    rows.loc[0, "a"], rows.loc[1, "c"], rows.loc[2, "b"] = "n/a", "unseen", ""
    rows.to_csv(csv, index=False)
    out = tmp_path / "pred.json"
    script = f"""
import sys
sys.path = [p for p in sys.path if p != {str(Path(medflow.__file__).parents[1])!r}]
import json, pathlib, mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/roundtrip@champion")
from medflow.data.sources import read_table  # importable only from the model's shipped code
raw = read_table(pathlib.Path({str(csv)!r}))
typed = raw.assign(a=pd.to_numeric(raw["a"], errors="coerce"), b=pd.to_numeric(raw["b"], errors="coerce"))
# Floats as pd.read_csv reads them, typed, and numbers as text: no input schema refuses any of them before the
# model's own checks (tests/test_predict.py has the rows those refuse).
frames = [model.predict(t).to_dict("list") for t in (pd.read_csv({str(csv)!r}), typed, raw)]
import medflow
json.dump({{"medflow": medflow.__file__, "frames": frames}}, open({str(out)!r}, "w"))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{proj.mlflow_db}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "/artifacts/code/medflow/" in result["medflow"]
    raw = read_table(csv)
    assert raw["a"].map(type).eq(str).sum() == 7  # string-typed, as every raw CSV arrives
    expected = Predictor(proj.model_bundle).predict(raw)
    for frame in result["frames"]:
        got = pd.DataFrame(frame, index=raw.index)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, atol=1e-6)
    assert expected["status"].eq("ok").all()  # "n/a" and "" are missing values, an unseen category is no error


def test_signature_types_the_outputs_and_the_metadata_lists_the_features(proj):
    import mlflow

    train_and_register(proj, "typed", 0.95)
    info = mlflow.models.get_model_info("models:/typed@champion")
    assert info.signature.inputs is None  # MLflow's enforcement of typed inputs quotes the rows it refuses
    assert info.metadata["features"] == {"numeric": ["a", "b"], "categorical": ["c"]}
    outputs = {c["name"]: c["type"] for c in info.signature.outputs.to_dict()}
    assert outputs == {
        "row": "long",
        "prediction": "string",
        "proba_no": "double",
        "proba_yes": "double",
        "status": "string",
        "reason": "string",
    }


def test_missing_inputs_say_which_step_to_run(project):
    params = params_for("missing")
    with pytest.raises(FileNotFoundError, match=r"^artifacts/train/run.json not found: run the train step first$"):
        register.run(params, project)
    project.train_run.parent.mkdir(parents=True)
    project.train_run.write_text('{"run_id": "0123"}')
    with pytest.raises(FileNotFoundError, match="artifacts/evaluate/metrics.json not found: run the evaluate step"):
        register.run(params, project)
    project.metrics.parent.mkdir(parents=True)
    project.metrics.write_text('{"test_accuracy": 0.9}')
    with pytest.raises(FileNotFoundError, match="artifacts/train/model/schema.json not found: run the train step"):
        register.run(params, project)
    project.model_bundle.mkdir(parents=True)
    SCHEMA.save(project.model_bundle / "schema.json")
    with pytest.raises(ValueError, match="metrics.json has no test_roc_auc: rerun the evaluate step"):
        register.run(params, project)


def test_bundle_with_identifier_values_is_refused(tmp_path, migrated_mlflow_db):
    leaky = cohort().assign(c=lambda d: d["email"])  # an e-mail column that slipped in as a category
    paths = make_project(tmp_path, migrated_mlflow_db, leaky)
    with pytest.raises(PhiLeak, match="model bundle.*email") as err:
        train_and_register(paths, "leaky", 0.95)
    assert "@example.org" not in str(err.value)
    assert aliases_or_none("leaky") is None


def aliases_or_none(name: str):
    from mlflow.exceptions import MlflowException

    try:
        return aliases(name)
    except MlflowException:
        return None


def test_a_worse_challenger_keeps_the_champion_and_the_gate_report_says_why(proj):
    from mlflow import MlflowClient

    train_and_register(proj, "gated", 0.97)
    summary = train_and_register(proj, "gated", 0.91)  # ranks worse on the same test patients
    assert (summary["promoted"], summary["champion_version"]) == (False, "1")
    out = proj.step_dir("register")
    gate = json.loads((out / "gate.json").read_text())
    c = gate["comparison"]
    assert (c["reference"], c["test"], c["passed"]) == ("champion v1", "superiority", False)
    assert c["ci_low"] <= c["delta"] <= c["ci_high"] < 0
    assert f"95% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]" in summary["reason"]
    assert gate["test"] == {"rows": 60, "patients": 60, "resampled": "patients"}
    baselines = {"baseline majority_class", "baseline logistic_regression", "baseline gradient_boosted_trees"}
    assert {"candidate", "champion v1", *baselines} == set(gate["models"])
    assert (gate["decision"], gate["version"], gate["champion_version"]) == ("not promoted", "2", "1")
    md = (out / "gate.md").read_text()
    assert f"Δ roc_auc = candidate − champion v1 = {c['delta']:+.4f}, 95% CI [{c['ci_low']:+.4f}" in md
    assert "**Decision: not promoted.**" in md and "| champion v1 |" in md
    logged = [a.path for a in MlflowClient().list_artifacts(summary["run_id"])]
    assert {"gate.json", "gate.md", "model_card.md", "model_card.json"} <= set(logged)
    card = json.loads((out / "model_card.json").read_text())
    assert card["gate"]["comparison"]["ci_low"] == c["ci_low"] and card["gate"]["report"] == ["gate.md", "gate.json"]
    assert "[gate.md](gate.md)" in (out / "model_card.md").read_text()
    assert aliases("gated") == {"champion": "1", "challenger": "2"}


def test_without_a_champion_the_best_baseline_is_the_reference_and_every_card_lists_baselines(proj):
    weak = train_and_register(proj, "baselined", 0.95, baseline_margin=0.02)
    assert not weak["promoted"] and "vs baseline logistic_regression" in weak["reason"]
    assert "non-inferiority, margin 0.02" in weak["reason"] and "no champion yet" in weak["reason"]
    assert aliases("baselined") == {"challenger": "1"}
    strong = train_and_register(proj, "baselined", 1.0, baseline_margin=0.02)  # ranks as well as the regression
    assert strong["promoted"] and strong["reason"].endswith("met (no champion yet)")
    out = proj.step_dir("register")
    card = json.loads((out / "model_card.json").read_text())
    assert set(card["baselines"]) == {"majority_class", "logistic_regression", "gradient_boosted_trees"}
    assert card["baselines"]["majority_class"]["roc_auc"] == 0.5
    md = (out / "model_card.md").read_text()
    assert "## This model and the baselines (same train split, same test patients)" in md
    assert "| logistic_regression | 1.0000" in md and "Δ this model − baseline [95% CI]" in md
    delta = card["baselines"]["majority_class"]["delta"]  # paired on the same test patients
    assert delta["ci_low"] <= delta["delta"] <= delta["ci_high"] and delta["delta"] > 0.3
    for section in ("## Intended use", "Split policy: by patient", "## Training environment", "| torch |"):
        assert section in md
    assert card["data"]["data_md5"] and card["environment"]["python"]
    raw = cohort()
    assert scan_text(md + json.dumps(card), forbidden=raw["pid"]) == []


def test_the_tree_baseline_stands_beside_the_others_and_a_project_may_require_beating_it(proj):
    from mlflow import MlflowClient

    # Trees split `a` near 50 as the label does: they rank the test patients about as well as this model.
    summary = train_and_register(proj, "treed", 0.97, require_superiority_over="gradient_boosted_trees")
    out = proj.step_dir("register")
    gate = json.loads((out / "gate.json").read_text())
    assert gate["models"]["baseline gradient_boosted_trees"]["roc_auc"] > 0.95
    r = gate["required"]
    assert (r["reference"], r["test"], r["bound"], r["passed"]) == (
        "baseline gradient_boosted_trees",
        "superiority",
        0.0,
        False,
    )
    assert not summary["promoted"] and aliases("treed") == {"challenger": "1"}
    assert summary["reason"].startswith(
        f"delta roc_auc vs baseline gradient_boosted_trees = {r['delta']:+.4f} (95% CI [{r['ci_low']:+.4f}, "
    )
    assert (
        "superiority (register.gate.require_superiority_over) needs the lower bound above +0.0000: not met"
        in summary["reason"]
    )
    d = gate["baseline_deltas"]["baseline gradient_boosted_trees"]
    logged = MlflowClient().get_run(summary["run_id"]).data.metrics
    assert (
        logged["baseline_gradient_boosted_trees_roc_auc"]
        == gate["models"]["baseline gradient_boosted_trees"]["roc_auc"]
    )
    assert (logged["delta_vs_gradient_boosted_trees_ci_low"], logged["delta_vs_gradient_boosted_trees_ci_high"]) == (
        d["ci_low"],
        d["ci_high"],
    )
    assert "| gradient_boosted_trees |" in (out / "model_card.md").read_text()
    assert "Required superiority over baseline gradient_boosted_trees" in (out / "gate.md").read_text()

    beaten = train_and_register(proj, "untreed", 0.97, require_superiority_over="majority_class")
    assert beaten["promoted"] and beaten["reason"].startswith("delta roc_auc vs baseline majority_class = +0.")
    assert (
        "superiority (register.gate.require_superiority_over) needs the lower bound above +0.0000: met;"
        in (beaten["reason"])
    )
    typo = train_and_register(proj, "mistreed", 0.97, require_superiority_over="random_forest")
    assert not typo["promoted"] and typo["reason"].startswith(
        "register.gate.require_superiority_over names random_forest, not a baseline of this run (it has: "
        "majority_class, logistic_regression, gradient_boosted_trees)"
    )
    train_and_register(proj, "treeless", 0.97, tree_baseline=None)
    assert "baseline gradient_boosted_trees" not in json.loads((out / "gate.json").read_text())["models"]


def test_a_near_perfect_model_resting_on_one_feature_is_a_suspected_leak_until_accepted(proj):
    leaky = train_and_register(proj, "leaky", 1.0, accept=())
    assert not leaky["promoted"] and aliases("leaky") == {"challenger": "1"}
    assert leaky["reason"].startswith("suspected target leakage: test roc_auc=1.0000 rests on 1 feature(s)")
    assert "-P 'data.exclude=[a]'" in leaky["reason"] and "-P 'validate.accept_leakage=[a]'" in leaky["reason"]
    gate = json.loads((proj.step_dir("register") / "gate.json").read_text())
    check = gate["leak_check"]
    assert check["suspects"] == ["a"] and check["accepted"] == [] and check["drops"]["a"] > 0.3
    assert abs(check["drops"]["b"]) < 0.05  # noise carries nothing: shuffling it costs next to nothing
    assert "## Leakage check" in (proj.step_dir("register") / "gate.md").read_text()

    accepted = train_and_register(proj, "leaky", 1.0)
    assert accepted["promoted"] and aliases("leaky") == {"champion": "2", "challenger": "1"}
    assert json.loads((proj.step_dir("register") / "gate.json").read_text())["leak_check"]["accepted"] == ["a"]

    below = train_and_register(proj, "leaky-below", 0.95, accept=())  # under validate.leakage_auc: not checked
    assert json.loads((proj.step_dir("register") / "gate.json").read_text())["leak_check"] is None
    assert below["promoted"]


def test_the_gate_report_compares_subgroups_and_keeps_small_ones_suppressed(proj):
    def with_subgroups(params: Params, min_patients: int) -> Params:
        raw = params.as_dict()
        raw["evaluate"] |= {"subgroups": ["c"], "min_group_patients": min_patients}
        return Params.model_validate(raw)

    register.run(with_subgroups(train(proj, "groups", 0.95), 10), proj)
    register.run(with_subgroups(train(proj, "groups", 0.99), 10), proj)
    gate = json.loads((proj.step_dir("register") / "gate.json").read_text())
    assert [r["group"] for r in gate["subgroups"]] == ["c=x", "c=z"]
    assert all(r["candidate"] > r["champion"] for r in gate["subgroups"]) and gate["subgroup_regressions"] == []
    register.run(with_subgroups(train(proj, "groups", 0.9), 40), proj)
    gate = json.loads((proj.step_dir("register") / "gate.json").read_text())
    # Both categories are small now: one pooled row, neither value named.
    rows = [(r["group"], r["patients"], r["candidate"], r["champion"]) for r in gate["subgroups"]]
    assert rows == [("c=<other>", "<40", None, None)]
    assert "| c=<other> | <40 |  |  |" in (proj.step_dir("register") / "gate.md").read_text()


def test_a_champion_whose_files_changed_is_not_re_scored_and_the_gate_says_why(proj):
    from mlflow import MlflowClient

    train_and_register(proj, "tampered", 0.95)
    client = MlflowClient()
    model_id = client.get_model_version("tampered", "1").source.removeprefix("models:/")
    weights = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    weights = weights / "artifacts" / "model" / "weights.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    summary = train_and_register(proj, "tampered", 0.99)
    assert not summary["promoted"] and "champion v1 could not be re-scored" in summary["reason"]
    gate = json.loads((proj.step_dir("register") / "gate.json").read_text())
    assert gate["champion_note"].startswith(
        "champion v1 could not be re-scored: tampered v1: its files differ from the ones registered"
    )
    assert "champion v1" not in gate["models"] and aliases("tampered") == {"champion": "1", "challenger": "2"}
