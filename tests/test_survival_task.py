"""data.task=survival: the gate's paired C-index draws against scikit-survival, the task's params, its bad input
(negative times, worded events without data.event_value, all censored, a follow-up time as a classification
feature), the steps on WHAS500 from validate to the gate's evidence and predict, and the whas500 example end to end."""

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored
from taskproject import task_params, trained, trees_registered, write_table
from usercmd import REPO, scratch_clone, sh

from medflow.data.columns import LABEL, SPLIT, TIME
from medflow.data.manifest import load_split
from medflow.data.sources import DEMOS
from medflow.evaluation import survival
from medflow.evaluation.metrics import resample_weights
from medflow.models.bundle import Predictor
from medflow.monitoring import reference
from medflow.monitoring import report as monitor_report
from medflow.params import ParamsError, from_dict
from medflow.paths import Paths
from medflow.pipeline import run_step
from medflow.promotion.evidence import gate_evidence
from medflow.tasks import for_params
from medflow.tuning.search import run as tune

BASE = {
    "data": {"source": "data/whas500.csv", "task": "survival", "time": "lenfol", "event": "fstat"},
    "train": {"max_epochs": 15, "patience": 5, "hidden": [16], "batch_size": 64, "horizons": [365, 730, 1825]},
    "evaluate": {"n_boot": 200},
    "register": {"model_name": "test-whas500", "gate": {"n_boot": 200}},
}


_params = partial(task_params, BASE)  # section__key=value overrides
_table = partial(write_table, name="whas500")  # (paths, df): df as the table _params read


@pytest.fixture(scope="module")
def whas500() -> pd.DataFrame:
    return DEMOS["whas500"]()


def test_the_gates_draws_are_harrells_c_of_each_model_on_the_same_resampled_rows():
    rng = np.random.default_rng(0)
    n = 120
    time = rng.integers(1, 40, n).astype(float)  # tied times, as days are
    event = rng.random(n) < 0.4
    risks = [rng.normal(size=n) - 0.05 * time, rng.normal(size=n)]
    draws = survival.bootstrap_draws(time, event, risks, None, 20, seed=5)
    assert draws.shape == (2, 20)
    # A resample repeats each row as often as it was drawn: Harrell's C of the repeated rows (copies of a row are
    # never comparable with one another) is the draw's.
    for b, w in enumerate(next(resample_weights(None, n, 20, 5)).astype(int)):
        rows = np.repeat(np.arange(n), w)
        for m, risk in enumerate(risks):
            expected = concordance_index_censored(event[rows], time[rows], risk[rows])[0]
            assert draws[m, b] == pytest.approx(expected)
    same = survival.bootstrap_draws(time, event, [risks[0], risks[0]], None, 20, seed=5)
    np.testing.assert_array_equal(same[0], same[1])


def test_brier_terms_average_to_scikit_survivals_brier_and_integrated_brier_scores():
    from sksurv.metrics import brier_score, integrated_brier_score

    rng = np.random.default_rng(1)
    n = 300
    train = survival.surv(rng.integers(1, 100, n).astype(float), rng.random(n) < 0.5)
    time, event = rng.integers(1, 90, n).astype(float), rng.random(n) < 0.5
    test = survival.surv(time, event)
    grid = np.linspace(10, 80, 30)
    curves = np.sort(rng.random((n, len(grid))), axis=1)[:, ::-1]
    terms = survival.brier_terms(train["time"], train["event"], time, event, curves, grid)
    np.testing.assert_allclose(terms.mean(axis=0), brier_score(train, test, curves, grid)[1])
    ibs = np.trapezoid(terms, grid, axis=1) / (grid[-1] - grid[0])
    assert ibs.mean() == pytest.approx(integrated_brier_score(train, test, curves, grid))
    (lo, hi), *_ = survival.brier_intervals(terms, None, 300, 0)
    assert lo < terms[:, 0].mean() < hi


def test_the_task_takes_c_index_and_the_event_as_its_target_and_needs_both_columns():
    params = _params()
    assert params.evaluate.primary_metric == "c_index" and params.data.target == "fstat"
    for_params(params)
    with pytest.raises(ParamsError) as err:
        for_params(_params(data__time=None))
    assert "\n" not in str(err.value) and "needs data.time" in str(err.value)
    with pytest.raises(ParamsError, match="survival takes c_index"):
        for_params(_params(evaluate__primary_metric="roc_auc"))


@pytest.mark.parametrize(
    ("change", "over", "expected"),
    [
        (lambda df: df.assign(lenfol=df["lenfol"].where(df.index % 50 != 3, -df["lenfol"])), {},
         "time column 'lenfol': 10 row(s) break the rule: a follow-up time is not negative"),
        (lambda df: df.assign(lenfol=df["lenfol"].where(df.index % 100 != 7, 0)), {},
         "time column 'lenfol': 5 row(s) break the rule: a follow-up time is above 0"),
        (lambda df: df.assign(fstat=df["fstat"].map({1: "dead", 0: "alive"})), {},
         "event column 'fstat': 500 row(s) break the rule: 1 (event) or 0 (censored); name the value meaning an "
         "event with -P data.event_value=VALUE"),
        (lambda df: df.assign(fstat=0), {}, "event column 'fstat': all 500 rows are censored"),
    ],
    ids=["negative_time", "time_zero", "worded_event", "all_censored"],
)  # fmt: skip
@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
def test_bad_survival_input_stops_validate_in_one_line_naming_column_rule_and_count(
    whas500, tmp_path, monkeypatch, change, over, expected, streamed
):
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    paths = Paths(root=tmp_path)
    _table(paths, change(whas500.copy()))
    if streamed:  # in chunks of 128 rows, the suite from a sample of 200: the counts are still the whole table's
        over = over | {"validate__stream_above_mb": 0, "validate__chunk_rows": 128, "validate__sample_rows": 200}
    with pytest.raises(ValueError) as err:
        run_step("validate", _params(**over), paths)
    message = str(err.value)
    assert "\n" not in message and expected in message, message
    assert not paths.valid_rows.exists()


def test_a_streamed_survival_table_validates_as_it_does_in_memory(whas500, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    streamed = {"validate__stream_above_mb": 0, "validate__chunk_rows": 128, "validate__sample_rows": 200}
    found = []
    for over in ({}, streamed):
        paths = Paths(root=tmp_path / str(len(over)))
        _table(paths, whas500)
        summary = run_step("validate", _params(**over), paths)
        found.append((summary["rows_valid"], list(pd.read_parquet(paths.valid_rows).columns)))
    assert found[0] == found[1] and found[0][0] == len(whas500)


def test_worded_events_pass_with_event_value(whas500, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    paths = Paths(root=tmp_path)
    _table(paths, whas500.assign(fstat=whas500["fstat"].map({1: "Dead", 0: "alive"})))
    run_step("validate", _params(data__event_value="dead"), paths)
    profile = (paths.step_dir("validate") / "profile" / "profile.md").read_text()
    assert "Censored (no event seen by the end of follow-up): 57.0%." in profile  # 215 deaths in 500
    run_step("clean", _params(data__event_value="dead"), paths)
    cleaned = pd.read_parquet(paths.cleaned)
    assert cleaned["_label"].sum() == whas500["fstat"].sum() and "lenfol" not in cleaned
    assert cleaned["_time"].tolist() == whas500["lenfol"].astype(float).tolist()


def test_a_follow_up_time_as_a_classification_feature_stops_with_the_survival_fix(whas500, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    paths = Paths(root=tmp_path)
    _table(paths, whas500)
    params = from_dict({"data": {"source": "data/whas500.csv", "target": "fstat", "positive_class": 1}})
    with pytest.raises(ValueError) as err:
        run_step("validate", params, paths)
    message = str(err.value)
    assert "\n" not in message and "suspected follow-up time" in message and "'lenfol'" in message
    assert "-P data.task=survival -P data.time=lenfol -P data.event=fstat -P data.positive_class=null" in message
    # The fix it gives runs: the same table as a time-to-event one passes validate, lenfol no feature.
    fixed = from_dict({"data": {**params.data.model_dump(), "task": "survival", "time": "lenfol", "event": "fstat",
                                "positive_class": None}})  # fmt: skip
    assert run_step("validate", fixed, paths)["rows_valid"] == len(whas500)
    assert "lenfol" in run_step("clean", fixed, paths)["dropped_columns"]


def test_the_steps_score_c_index_against_both_baselines_and_predict_survival(whas500, project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    _table(project, whas500)
    params = _params(evaluate__subgroups=["gender"], evaluate__min_group_patients=20)
    for step in ("validate", "clean", "split"):
        run_step(step, params, project)
    split = json.loads(project.summary("split").read_text())
    assert all(censored_events[1] > 0 for censored_events in split["event_counts"].values())
    run_step("train", params, project)
    train = json.loads(project.summary("train").read_text())
    assert 0.5 < train["best_val_c_index"] <= 1
    metrics = run_step("evaluate", params, project)
    stored = json.loads(project.metrics.read_text())
    assert stored["test_c_index_ci_low"] < stored["test_c_index"] < stored["test_c_index_ci_high"]
    for key in ("test_uno_c", "test_auc_at_365", "test_brier_at_730", "test_integrated_brier", "test_mean_auc"):
        assert key in metrics
    assert stored["test_brier_at_730_ci_low"] < stored["test_brier_at_730"] < stored["test_brier_at_730_ci_high"]
    assert stored["test_auc_at_365_ci_low"] < stored["test_auc_at_365"] < stored["test_auc_at_365_ci_high"]
    assert stored["test_integrated_brier_ci_low"] < stored["test_integrated_brier"]
    assert (project.step_dir("evaluate") / "plots" / "km_by_risk_group.png").exists()
    assert (project.step_dir("evaluate") / "roc.json").read_text() == "[]\n"  # dvc.yaml's plot, empty
    assert "| 1825 | 5 |" in (project.step_dir("evaluate") / "report.md").read_text()
    perm = json.loads((project.step_dir("evaluate") / "report.json").read_text())["permutation_importance"]
    assert perm["metric"] == "c_index" and not perm["lower_is_better"] and perm["features"][0]["drop"] > 0
    # Subgroups: Harrell's C per group with its CI, each group's C the one of its own rows.
    sub = json.loads((project.step_dir("evaluate") / "report.json").read_text())["subgroups"]
    shown = {r["group"]: r for r in sub["groups"] if "c_index" in r}
    assert set(shown) == {"gender=0", "gender=1"} and "lower_is_better" not in sub
    df, _ = load_split(project)
    women = df[(df[SPLIT] == "test") & (df["gender"] == 1)]
    risk = Predictor(project.model_bundle).outputs(women)[:, 0]
    assert shown["gender=1"]["c_index"] == pytest.approx(survival.harrell_c(women[TIME], women[LABEL], risk))
    assert all(r["c_index_ci_low"] < r["c_index"] < r["c_index_ci_high"] for r in shown.values())
    assert stored["test_subgroup_worst_c_index"] == pytest.approx(min(r["c_index"] for r in shown.values()), abs=1e-6)

    comparison, _, _, report = gate_evidence(params, project, stored, None)
    assert set(report["baseline_deltas"]) == {"baseline cox", "baseline gradient_boosted_trees"}
    cox = report["models"]["baseline cox"]
    assert 0.65 < cox["c_index"] < 0.9 and cox["ci_low"] < cox["c_index"] < cox["ci_high"]
    assert report["models"]["candidate"]["c_index"] == pytest.approx(stored["test_c_index"])
    assert comparison.reference.startswith("baseline ")

    predictor = Predictor(project.model_bundle)
    batch = whas500.drop(columns=["lenfol", "fstat"]).astype(str)
    batch.loc[5, "age"] = "old"
    scored = predictor.score(batch)
    horizons = ["survival_at_365", "survival_at_730", "survival_at_1825"]
    assert list(scored.columns) == ["row", "risk", *horizons, "status", "reason"] and len(scored) == len(batch)
    assert scored.loc[5, "status"] == "refused" and scored.loc[5, [*horizons, "risk"]].isna().all()
    ok = scored[scored["status"].eq("ok")]
    # Survival falls with time and with risk.
    assert (ok["survival_at_365"] >= ok["survival_at_730"]).all() and (
        ok["survival_at_730"] >= ok["survival_at_1825"]
    ).all()
    assert np.corrcoef(ok["risk"], ok["survival_at_730"])[0, 1] < -0.9

    # monitor: the risk score drifts as a numeric feature does; a labelled batch is judged by its C-index.
    train_rows = pd.read_parquet(project.cleaned).iloc[:300]
    ref = reference.build(train_rows, predictor.schema, predictor.outputs(train_rows)[:, 0], None, 10, 10)
    labelled = whas500.astype(str)
    judged = monitor_report.check(labelled, ref, predictor, params)
    perf = judged["performance"]
    assert perf["metric"] == "c_index" and perf["ci_low"] < perf["value"] < perf["ci_high"] and "psi" in judged["score"]
    unlabelled = monitor_report.check(labelled.drop(columns=["lenfol"]), ref, predictor, params)
    assert unlabelled["performance"] is None and "psi" in unlabelled["score"]

    # tune: the validation C-index, maximised.
    tuning = _params(tune__metric="val_c_index", tune__trials=2, tune__pruner="none", train__max_epochs=3)
    (project.root / "params.yaml").write_text("seed: 42\n")
    study = tune(tuning, project, project.root / "params.yaml")
    assert study["direction"] == "maximize" and study["trials"]["complete"] == 2 and 0.5 < study["best_value"] <= 1


@pytest.mark.e2e
def test_the_whas500_example_registers_a_champion_and_predicts_every_row(tmp_path, migrated_mlflow_db, prefect_server):
    from mlflow import MlflowClient

    clone = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    server = {"PREFECT_API_URL": prefect_server}
    done = sh(
        ".venv/bin/medflow run --params examples/whas500.yaml -P train.max_epochs=60 -P validate.data_docs=false",
        clone,
        timeout=900,
        **server,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("registered medflow-whas500 v1 (champion: delta c_index vs baseline "), last
    store = f"sqlite:///{clone / 'mlruns/mlflow.db'}"
    card = MlflowClient(store, registry_uri=store).get_model_version("medflow-whas500", "1").description
    assert "Time to the event `fstat` over the follow-up `lenfol`" in card and "Primary metric: `test_c_index`" in card
    assert "| uno_c |" in card and "| brier_at_365 |" in card and "| integrated_brier |" in card
    assert "`lenfol` (data.time" in card
    for baseline in ("cox", "gradient_boosted_trees"):
        assert f"| {baseline} |" in card
    sh(".venv/bin/medflow predict --model models:/medflow-whas500@champion --input data/whas500.csv "
       "--output out/scored.csv", clone)  # fmt: skip
    scored = pd.read_csv(clone / "out/scored.csv")
    assert len(scored) == len(pd.read_csv(clone / "data/whas500.csv"))
    assert list(scored.columns) == [
        "row", "model", "version", "risk", "survival_at_365", "survival_at_730", "survival_at_1825", "status", "reason"
    ]  # fmt: skip
    assert scored["status"].eq("ok").all() and scored["survival_at_730"].between(0, 1).all()
    # The trees as the registered model: risk from XGBoost's Cox objective, survival from its Breslow baseline.
    card, trees = trees_registered(clone, "whas500", store, scored, server)
    assert "Primary metric: `test_c_index`" in card and "| cox |" in card
    assert trees["survival_at_730"].between(0, 1).all()


def test_a_study_that_censors_everyone_at_its_end_still_gets_its_time_dependent_metrics(project, monkeypatch):
    """Rossi's follow-up ends at week 52 for everyone still free, so the training split's censoring estimate reaches
    0 there: test rows followed to its end are censored there for the IPCW metrics, which then still exist."""
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    rossi = DEMOS["rossi"]()
    project.data_dir.mkdir(parents=True, exist_ok=True)
    rossi.to_csv(project.data_dir / "rossi.csv", index=False)
    params = _params(
        data__source="data/rossi.csv", data__time="week", data__event="arrest", train__horizons=[13, 26, 52],
        train__max_epochs=3,
    )  # fmt: skip
    for step in ("validate", "clean", "split", "train"):
        run_step(step, params, project)
    metrics = run_step("evaluate", params, project)
    assert {"test_uno_c", "test_brier_at_13", "test_auc_at_26", "test_integrated_brier"} <= set(metrics)
    report = json.loads((project.step_dir("evaluate") / "report.json").read_text())
    assert (
        report["horizons"] == [13, 26] and report["horizons_note"] == "1 horizon(s) outside the test follow-up left out"
    )


def test_xgboost_ranks_by_cox_and_predicts_survival_from_its_breslow_baseline(whas500, project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "survival-salt")
    _table(project, whas500)
    params = _params(train__model="xgboost", train__n_estimators=60, train__patience=10)
    train, config = trained(project, params)
    assert 0.6 < train["best_val_c_index"] <= 1
    assert (
        config["name"] == "xgboost" and config["task"] == "cox" and config["survival"]["horizons"] == [365, 730, 1825]
    )
    metrics = run_step("evaluate", params, project)
    assert metrics["test_c_index"] > 0.6 and "test_brier_at_730" in metrics
    predictor = Predictor(project.model_bundle)
    scored = predictor.score(whas500.drop(columns=["lenfol", "fstat"]).astype(str))
    assert list(scored.columns)[:5] == ["row", "risk", "survival_at_365", "survival_at_730", "survival_at_1825"]
    assert scored["status"].eq("ok").all() and np.corrcoef(scored["risk"], scored["survival_at_730"])[0, 1] < -0.9
    # The Breslow baseline was fitted on the trees' own training scores: the training split's mean predicted
    # survival at a horizon is near its Kaplan-Meier estimate.
    df, _ = load_split(project)
    rows = df[df[SPLIT] == "train"]
    mean = predictor.survival_at(predictor.outputs(rows)[:, 0], [730]).mean()
    assert mean == pytest.approx(survival.km_at(rows[TIME], rows[LABEL], 730), abs=0.05)
    # tune: tune.tree_space, each trial's value its best round's validation C-index.
    (project.root / "params.yaml").write_text("seed: 42\n")
    study = tune(_params(train__model="xgboost", train__n_estimators=30, tune__metric="val_c_index", tune__trials=2,
                         tune__pruner="none"), project, project.root / "params.yaml")  # fmt: skip
    assert study["direction"] == "maximize" and study["trials"]["complete"] == 2 and 0.6 < study["best_value"] <= 1


def test_the_schema_hash_tells_another_time_or_event_word_apart_and_keeps_a_classifiers():
    import dataclasses
    import hashlib

    from medflow.data.features import Schema
    from medflow.promotion.evidence import schema_hash

    base = Schema("fstat", [], ["age", "hr"], ["gender"], outcome="survival", time="lenfol")
    assert len({schema_hash(base), schema_hash(dataclasses.replace(base, time="los")),
                schema_hash(dataclasses.replace(base, event_value="dead"))}) == 3  # fmt: skip
    classifier = Schema("y", ["a", "b"], ["x"], [])
    keys = ("kind", "target", "classes", "numeric", "categorical", "image_shape")
    before = json.dumps({k: getattr(classifier, k) for k in keys}, sort_keys=True)  # the hash of earlier versions
    assert schema_hash(classifier) == hashlib.sha256(before.encode()).hexdigest()[:16]


@pytest.mark.parametrize("example", ["whas500", "diabetes"])
def test_the_example_is_a_whole_params_file_for_dvc_repro(example):
    """`cp examples/<example>.yaml params.yaml && dvc repro`: DVC stops on any key its stages list that the file
    lacks (MissingParamsError), so every such key is written out, and the file loads as the task's params."""
    import yaml

    from medflow.params import load

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    keys = {k for s in stages for k in s.get("params", []) if isinstance(k, str)}
    raw = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    for key in sorted(keys):
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"examples/{example}.yaml lacks {key} (dvc.yaml lists it)"
            node = node[part]
    assert load(REPO / "examples" / f"{example}.yaml").data.source == example
