"""data.task=regression: its metrics against scikit-learn and numpy, the task's params checks, the gate's ceiling,
its bad input (text in the target, a constant target, a classification metric) and the steps on the diabetes table
from validate to the gate's evidence, predicting in the target's units."""

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from taskproject import task_params, trained, trees_registered, write_table
from usercmd import scratch_clone, sh

from medflow.data.sources import DEMOS
from medflow.evaluation import regression
from medflow.evaluation.metrics import resample_weights
from medflow.models.bundle import Predictor
from medflow.monitoring import reference
from medflow.monitoring.report import check
from medflow.params import ParamsError, from_dict
from medflow.paths import Paths
from medflow.pipeline import run_step
from medflow.promotion.evidence import gate_evidence
from medflow.promotion.gate import decide, subgroup_regressions
from medflow.tasks import for_params

BASE = {
    "data": {"source": "data/diabetes.csv", "target": "progression", "task": "regression",
             "positive_class": None},
    "train": {"max_epochs": 15, "patience": 5, "hidden": [16]},
    "evaluate": {"n_boot": 200},
    "register": {"model_name": "test-diabetes", "gate": {"n_boot": 200}},
}  # fmt: skip


_params = partial(task_params, BASE)  # section__key=value overrides
_table = partial(write_table, name="diabetes")  # (paths, df): df as the table _params read


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return DEMOS["diabetes"]()


def test_metrics_match_scikit_learn_and_a_bootstrap_weighs_each_patient_by_its_draws():
    rng = np.random.default_rng(0)
    y = rng.normal(100, 30, 300)
    pred = 0.7 * y + rng.normal(20, 15, 300)
    got = regression.point_metrics(y, pred)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert got["calibration_in_the_large"] == pytest.approx(y.mean() - pred.mean())
    assert got["calibration_slope"] == pytest.approx(np.polyfit(pred, y, 1)[0])
    # Patients of 1-3 rows: a resample's metric is the one of its rows weighted by their patient's draws.
    groups = np.repeat(np.arange(150), 2).astype(str)
    draws = regression.bootstrap_draws(y, [pred], groups, "mae", 50, seed=3)[0]
    w = next(resample_weights(groups, len(y), 50, 3))
    expected = (w * np.abs(pred - y)).sum(axis=1) / w.sum(axis=1)
    np.testing.assert_allclose(draws, expected)
    lo, hi = regression.bootstrap_ci(y, pred, groups, 200, 3)["mae"]
    assert lo < got["mae"] < hi


def test_the_task_decides_the_default_metric_and_refuses_the_other_tasks_in_one_line():
    assert _params().evaluate.primary_metric == "mae"
    assert from_dict({}).evaluate.primary_metric == "roc_auc"
    with pytest.raises(ParamsError) as err:
        for_params(_params(evaluate__primary_metric="roc_auc"))
    assert "\n" not in str(err.value) and "regression takes one of mae, rmse, r2" in str(err.value)
    with pytest.raises(ParamsError, match="classification takes one of roc_auc"):
        for_params(from_dict({"evaluate": {"primary_metric": "mae"}}))


def test_min_primary_is_a_ceiling_for_a_metric_better_lower():
    refused = decide("test_mae", 50.0, 40.0, higher_is_better=False)
    assert not refused.promoted and "above the ceiling 40.0000" in refused.reason
    assert decide("test_mae", 30.0, 40.0, higher_is_better=False).promoted
    assert not decide("test_roc_auc", 0.8, 0.9).promoted  # a floor, as ever


def test_a_subgroup_regresses_when_its_mae_rises_by_more_than_the_tolerance_of_the_champions():
    def report(mae: dict) -> dict:
        groups = [{"group": g, "mae": v} for g, v in mae.items()] + [{"group": "small", "suppressed": True}]
        return {"primary_metric": "mae", "lower_is_better": True, "groups": groups}

    champion = report({"sex=1": 40.0, "sex=2": 50.0})
    # 5% of 40 is 2: 41.9 is within it, 52.6 is more than 5% of 50 above it; a lower MAE is never a regression.
    found = subgroup_regressions(report({"sex=1": 41.9, "sex=2": 52.6}), champion, 0.05)
    assert found == ("subgroup sex=2 mae rises from 50.0000 to 52.6000 (more than the tolerance 0.05 of the "
                     "champion's, register.gate.subgroup_tolerance)",)  # fmt: skip
    assert subgroup_regressions(report({"sex=1": 10.0, "sex=2": 20.0}), champion, 0.05) == ()


STREAMED = {"validate__stream_above_mb": 0, "validate__chunk_rows": 128, "validate__sample_rows": 200}


@pytest.mark.parametrize("over", [{}, STREAMED], ids=["in_memory", "streamed"])
def test_text_in_some_target_rows_is_quarantined_and_counted(diabetes, tmp_path, monkeypatch, over):
    monkeypatch.setenv("MEDFLOW_SALT", "regression-salt")
    df = diabetes.astype(object)
    df.loc[[3, 50, 200], "progression"] = "pending"
    df.loc[[7, 8], "progression"] = [f"{v:g} units" for v in diabetes.loc[[7, 8], "progression"]]
    paths = Paths(root=tmp_path)
    _table(paths, df)
    summary = run_step("validate", _params(**over), paths)
    assert ("streamed" in summary) == bool(over)
    assert summary["rows_in"] == len(df) == summary["rows_valid"] + summary["rows_quarantined"]
    assert summary["rows_quarantined"] == 3
    assert summary["quarantine_reasons"] == {"progression: expect_column_values_to_match_regex": 3}
    held = pd.read_csv(paths.step_dir("validate") / "quarantine.csv")
    assert sorted(held["_row_id"]) == [3, 50, 200] and "progression" not in held
    cleaned = run_step("clean", _params(**over), paths)
    assert cleaned["rows_out"] == len(df) - 3


@pytest.mark.parametrize("over", [{}, STREAMED], ids=["in_memory", "streamed"])
def test_a_constant_target_stops_with_one_line(diabetes, tmp_path, monkeypatch, over):
    monkeypatch.setenv("MEDFLOW_SALT", "regression-salt")
    paths = Paths(root=tmp_path)
    _table(paths, diabetes.assign(progression=140.0))
    with pytest.raises(ValueError) as err:
        run_step("validate", _params(**over), paths)
    message = str(err.value)
    assert "\n" not in message and "140" not in message
    assert "'progression' has 1 distinct non-null value(s)" in message and "regression target needs 2" in message
    assert not paths.valid_rows.exists()


def test_a_classification_metric_on_a_regression_stops_validate_in_one_line(diabetes, tmp_path):
    paths = Paths(root=tmp_path)
    _table(paths, diabetes)
    with pytest.raises(ParamsError) as err:
        run_step("validate", _params(evaluate__primary_metric="roc_auc"), paths)
    assert "\n" not in str(err.value) and "'roc_auc' is a classification metric" in str(err.value)
    assert not paths.valid_rows.exists() and not paths.expectations_dir.exists()


def test_the_steps_predict_in_the_target_units_and_the_gate_counts_improvement(diabetes, project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "regression-salt")
    _table(project, diabetes)
    params = _params(evaluate__subgroups=["sex", "age"], evaluate__subgroup_bins={"age": [40, 60]})
    for step in ("validate", "clean", "split", "train"):
        run_step(step, params, project)
    train = json.loads(project.summary("train").read_text())
    assert "best_val_mae" in train and "best_val_accuracy" not in train
    metrics = run_step("evaluate", params, project)
    assert {"test_mae", "test_rmse", "test_r2", "test_calibration_slope"} <= set(metrics)
    stored = json.loads(project.metrics.read_text())
    assert stored["test_mae_ci_low"] < stored["test_mae"] < stored["test_mae_ci_high"]
    assert (project.step_dir("evaluate") / "plots" / "predicted_vs_observed.png").exists()
    # Subgroups: each group's MAE with its patient-bootstrap CI; the worst is the highest MAE.
    sub = json.loads((project.step_dir("evaluate") / "report.json").read_text())["subgroups"]
    shown = [r for r in sub["groups"] if "mae" in r]
    assert sub["lower_is_better"] and len(shown) >= 3
    assert all(r["mae_ci_low"] < r["mae"] < r["mae_ci_high"] for r in shown)
    assert stored["test_subgroup_worst_mae"] == pytest.approx(max(r["mae"] for r in shown), abs=1e-6)
    assert "Worst group (highest mae)" in (project.step_dir("evaluate") / "report.md").read_text()
    assert (project.step_dir("evaluate") / "plots" / "subgroups.png").exists()
    # Permutation importance counts the rise of MAE as the loss: the columns the model needs lose most.
    perm = json.loads((project.step_dir("evaluate") / "report.json").read_text())["permutation_importance"]
    assert perm["metric"] == "mae" and perm["lower_is_better"] and perm["features"][0]["ci_low"] > 0
    assert (project.step_dir("evaluate") / "plots" / "permutation_importance.png").exists()

    predictor = Predictor(project.model_bundle)
    batch = diabetes.drop(columns="progression").astype(str)
    batch.loc[5, "bmi"] = "heavy"
    scored = predictor.score(batch)
    assert list(scored.columns) == ["row", "prediction", "status", "reason"] and len(scored) == len(batch)
    assert scored.loc[5, "status"] == "refused" and np.isnan(scored.loc[5, "prediction"])
    ok = scored["status"].eq("ok")
    # In the target's units: the predictions' mean lies near the target's, far from the standardised scale.
    assert abs(scored.loc[ok, "prediction"].mean() - diabetes["progression"].mean()) < 25

    comparison, _, _, report = gate_evidence(params, project, stored, None)
    assert report["lower_is_better"] and set(report["baseline_deltas"]) == {
        "baseline training_mean", "baseline ridge", "baseline gradient_boosted_trees",
    }  # fmt: skip
    cand = report["models"]["candidate"]["mae"]
    mean = report["models"]["baseline training_mean"]["mae"]
    # Improvement over the training mean: its MAE minus the candidate's, positive when the candidate is better.
    assert report["baseline_deltas"]["baseline training_mean"]["delta"] == pytest.approx(mean - cand)
    assert mean > cand and comparison.reference.startswith("baseline ")
    assert {r["group"] for r in report["subgroups"]} >= {"sex=1", "sex=2"}

    # Monitoring: the predictions' distribution drifts with the features, and a labelled batch is judged by MAE
    # against monitor.performance_floor as a ceiling.
    ref = reference.from_pipeline(params, project, None)
    assert ref["score"]["kind"] == "numeric" and len(ref["score"]["counts"]) > 1
    shifted = diabetes.sample(150, random_state=1).assign(bmi=lambda d: d["bmi"] + 15, s5=lambda d: d["s5"] + 1)
    ceiling = from_dict(params.as_dict() | {"monitor": {"performance_floor": 1.0}})
    report = check(shifted.astype(str), ref, predictor, ceiling)
    assert {"bmi", "s5"} <= set(report["drifted_features"])
    perf = report["performance"]
    assert perf["metric"] == "mae" and perf["lower_is_better"] and perf["ci_low"] < perf["value"] < perf["ci_high"]
    assert any("above the ceiling 1.0" in why for why in report["retrain_because"])
    same = check(diabetes.sample(150, random_state=2).astype(str), ref, predictor, params)
    assert not same["score"]["drifted"] and not same["retrain_because"]
    assert report["score"]["psi"] > 2 * same["score"]["psi"]  # the predictions moved with them


@pytest.mark.e2e
def test_the_diabetes_example_registers_a_champion_and_predicts_every_row(tmp_path, migrated_mlflow_db, prefect_server):
    from mlflow import MlflowClient

    clone = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    server = {"PREFECT_API_URL": prefect_server}
    done = sh(
        ".venv/bin/medflow run --params examples/diabetes.yaml -P train.max_epochs=80 -P validate.data_docs=false",
        clone,
        timeout=900,
        **server,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("registered medflow-diabetes v1 (champion: delta improvement in mae"), last
    store = f"sqlite:///{clone / 'mlruns/mlflow.db'}"
    card = MlflowClient(store, registry_uri=store).get_model_version("medflow-diabetes", "1").description
    assert "Regression of `progression`" in card and "Primary metric: `test_mae`" in card
    assert "| calibration_slope |" in card and "| r2 |" in card
    assert "Lower mae is better: each Δ is the improvement, baseline − this model" in card
    for baseline in ("training_mean", "ridge", "gradient_boosted_trees"):
        assert f"| {baseline} |" in card
    sh(".venv/bin/medflow predict --model models:/medflow-diabetes@champion --input data/diabetes.csv "
       "--output out/scored.csv", clone)  # fmt: skip
    scored = pd.read_csv(clone / "out/scored.csv")
    assert len(scored) == len(pd.read_csv(clone / "data/diabetes.csv"))
    assert list(scored.columns) == ["row", "model", "version", "prediction", "status", "reason"]
    assert scored["status"].eq("ok").all() and scored["prediction"].between(0, 400).all()
    # The trees as the registered model: the same steps from train on, the same predict columns.
    card, trees = trees_registered(clone, "diabetes", store, scored, server)
    assert "Primary metric: `test_mae`" in card and "| gradient_boosted_trees |" in card
    assert trees["prediction"].between(0, 400).all()


def test_tune_minimises_val_mae_and_refuses_a_classifier_metric(diabetes, project, monkeypatch):
    from medflow.tuning import search

    monkeypatch.setenv("MEDFLOW_SALT", "regression-salt")
    _table(project, diabetes)
    params = _params(tune__metric="val_mae", tune__trials=3, train__max_epochs=4)
    for step in ("validate", "clean", "split"):
        run_step(step, params, project)
    summary = search.run(params, project, project.root / "params.yaml")
    assert summary["direction"] == "minimize" and summary["trials"]["complete"] == 3
    study = json.loads((project.root / "artifacts/tune/summary.json").read_text())
    assert study["best_value"] == summary["best_value"] < 150  # in the target's units, not standardised ones
    with pytest.raises(ParamsError, match="tune.metric=val_accuracy is a classifier's; regression tunes val_loss"):
        search.run(_params(tune__metric="val_accuracy"), project, project.root / "params.yaml")


def test_xgboost_trains_on_the_standardised_target_and_predicts_in_its_units(diabetes, project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "regression-salt")
    _table(project, diabetes)
    params = _params(train__model="xgboost", train__n_estimators=60, train__patience=10)
    train, config = trained(project, params)
    assert 30 < train["best_val_mae"] < 70  # in the target's units (its SD is ~77), not standardised ones
    assert config["name"] == "xgboost" and config["task"] == "regression" and "target_scale" in config
    assert (project.model_bundle / "trees.json").exists() and not (project.model_bundle / "weights.pt").exists()
    metrics = run_step("evaluate", params, project)
    assert 30 < metrics["test_mae"] < 70
    scored = Predictor(project.model_bundle).score(diabetes.drop(columns="progression").astype(str))
    assert list(scored.columns) == ["row", "prediction", "status", "reason"] and scored["status"].eq("ok").all()
    assert abs(scored["prediction"].mean() - diabetes["progression"].mean()) < 25
    # tune: tune.tree_space, each trial's value its best round's validation MAE in the target's units.
    from medflow.tuning import search

    tuning = _params(train__model="xgboost", train__n_estimators=30, tune__metric="val_mae", tune__trials=2)
    study = search.run(tuning, project, project.root / "params.yaml")
    assert study["direction"] == "minimize" and study["trials"]["complete"] == 2 and 30 < study["best_value"] < 80
