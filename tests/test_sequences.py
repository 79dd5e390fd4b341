"""data.kind=events: the synthetic ICU cohort validated (units converted, faults quarantined with their reasons, no
date kept), leakage after the prediction time stopped naming the variable, the grid and its normalisation, and a
shrunk cohort from validate to the gate's aggregate baselines, predict on new stays, monitor and tune; the example
end to end on a shrunk cohort."""

import json

import numpy as np
import pandas as pd
import pytest
from usercmd import scratch_clone, sh

from medflow.data.suite import ValidationFailed
from medflow.models.bundle import Predictor
from medflow.monitoring import reference as monitor_reference
from medflow.monitoring import report as monitor_report
from medflow.params import from_dict
from medflow.pipeline import run_step
from medflow.promotion.evidence import gate_evidence
from medflow.sequences import cohort
from medflow.sequences.grid import SequenceNormaliser, build
from medflow.sequences.steps import GRID, grid_of
from medflow.tuning.search import run as tune

STAYS = 1200
SHRINK = "-P train.max_epochs=20 -P train.patience=6 -P evaluate.n_boot=200 -P register.gate.n_boot=200"
UNITS = {v: {u: list(c) for u, c in units.items()} for v, units in cohort.UNITS.items()}


def _params(**over):
    raw = {
        "data": {
            "kind": "events",
            "source": "data/events.csv",
            "target": "outcome",
            "positive_class": "died",
            "patient_id": "subject_id",
            "events": {"labels": "data/labels.csv", "units": UNITS, "after_prediction": "drop", "chunk_stays": 64},
        },
        "train": {"model": "gru", "hidden": [16], "max_epochs": 3, "patience": 3, "batch_size": 64, "lr": 0.01},
        "evaluate": {"n_boot": 100},
        "register": {"model_name": "test-icu", "gate": {"n_boot": 100}},
    }
    for key, value in over.items():
        *path, name = key.split("__")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value
    return from_dict(raw)


def _write(project, n_stays: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    events, labels = cohort.cohort(n_stays, seed)
    project.data_dir.mkdir(parents=True, exist_ok=True)
    events.to_csv(project.data_dir / "events.csv", index=False)
    labels.to_csv(project.data_dir / "labels.csv", index=False)
    return events, labels


def test_validate_converts_units_quarantines_faults_with_reasons_and_keeps_no_date(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "seq-salt")
    events, labels = _write(project, 120)
    summary = run_step("validate", _params(), project)
    out = project.step_dir("validate")
    assert summary["events_in"] == len(events) == summary["events_on_grid"] + summary["events_quarantined"]
    held = pd.read_csv(out / "quarantine_events.csv")
    assert len(held) == summary["events_quarantined"] and held["reason"].ne("").all()
    reasons = summary["events_by_reason"]
    assert reasons["duplicate"] > 0 and reasons["time: not a time"] > 0 and reasons["numeric_value: not a number"] > 0
    assert reasons["unit: not a unit data.events.units lists for the variable"] > 0
    assert (
        summary["unit_conversions"]["temperature: F -> C"] > 0
        and summary["unit_conversions"]["lactate: mg/dL -> mmol/L"]
    )
    grid = np.load(out / GRID)
    assert grid.shape == (len(labels), 48, 5)
    # Fahrenheit and mg/dL rows were converted: every charted temperature is a body temperature in C, lactate mmol/L.
    temperature, lactate = grid[..., 3], grid[..., 2]
    assert np.nanmin(temperature) > 34 and np.nanmax(temperature) < 41 and np.nanmax(lactate) < 10
    # Times are hours since the stay's first event: no date of the source is in any output.
    for path in out.rglob("*"):
        if path.is_file():
            assert b"2150-" not in path.read_bytes() and b"2151-" not in path.read_bytes(), path.name
    valid = pd.read_parquet(project.valid_rows)
    assert "subject_id" not in valid and valid["_patient_key"].nunique() < len(valid)  # stays of one patient


def test_an_event_after_the_prediction_time_stops_validate_naming_the_variable_and_count(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "seq-salt")
    _write(project, 60)
    with pytest.raises(ValidationFailed) as stopped:
        run_step("validate", _params(data__events__after_prediction="stop"), project)
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("data/events.csv: column time: ")
    assert "event(s) after their stay's prediction time (rule: no event after the prediction time, leakage)" in message
    assert "map " in message and "data.events.after_prediction=drop" in message
    assert not project.valid_rows.exists()


def test_the_grid_keeps_each_bins_latest_value_in_any_chunking_and_normalises_with_masks():
    rng = np.random.default_rng(0)
    n, stays = 500, 40
    stay, hour = rng.integers(0, stays, n), rng.uniform(0, 12, n)
    variable, value = rng.integers(0, 3, n), rng.normal(size=n)
    one = build(stay, hour, variable, value, stays, 3, 12.0, 2.0, chunk=7)
    assert np.array_equal(one, build(stay, hour, variable, value, stays, 3, 12.0, 2.0, chunk=1000), equal_nan=True)
    s, b, v = 5, 2, 1
    here = (stay == s) & (variable == v) & (hour // 2 == b)
    assert one[s, b, v] == np.float32(value[here][np.argmax(hour[here])])
    pre = SequenceNormaliser(["a", "b", "c"], 12.0, 2.0, 6.0).fit(one)
    x = pre.transform(one, chunk=3)
    assert x.shape == (stays, 6, 9)
    seen = ~np.isnan(one)
    assert np.array_equal(x[..., 3:6], seen)
    # Carried forward: an unseen bin repeats the last seen one's standardised value; before any, 0 and since 1.
    first = seen[..., 0].argmax(1)
    i = int(np.flatnonzero(first > 0)[0])
    assert x[i, 0, 0] == 0 and x[i, 0, 6] == 1
    j, t = next((j, t) for j in range(stays) for t in range(1, 6) if seen[j, t - 1, 0] and not seen[j, t, 0])
    assert x[j, t, 0] == x[j, t - 1, 0] and x[j, t, 6] == pytest.approx(2.0 / 12.0)


def test_a_gru_trains_beside_aggregate_baselines_scores_new_stays_and_tunes(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "seq-salt")
    _write(project, 300)
    params = _params()
    for step in ("validate", "clean", "split", "train"):
        run_step(step, params, project)
    assert json.loads(project.summary("train").read_text())["grid"] == [48, 15]
    metrics = run_step("evaluate", params, project)
    assert 0 <= metrics["test_roc_auc"] <= 1
    stored = json.loads(project.metrics.read_text())
    _, _, _, report = gate_evidence(params, project, stored, None)
    assert set(report["baseline_deltas"]) == {
        "baseline majority_class", "baseline logistic_regression", "baseline gradient_boosted_trees"
    }  # fmt: skip
    assert report["leak_check"] is None

    predictor = Predictor(project.model_bundle)
    events, labels = cohort.cohort(20, seed=5)
    labels = labels.drop(columns="outcome").astype(str)
    labels.loc[2, "prediction_time"] = "tomorrow"
    gone = labels.loc[4, "stay_id"]
    scored = predictor.score_stays(labels, events[events["stay_id"].astype(str) != gone].astype(str))
    assert len(scored) == len(labels) and list(scored.columns) == [
        "row", "prediction", "proba_not_died", "proba_died", "status", "reason"
    ]  # fmt: skip
    assert scored.loc[2, "reason"] == "prediction_time: not a time"
    assert scored.loc[4, "reason"] == "no event of the stay in its observation window"
    assert scored["status"].eq("ok").sum() == len(labels) - 2 and scored["proba_died"].isna().sum() == 2
    # The training cohort's own stays, read again from their events, score as evaluate scored their grid.
    own = pd.read_csv(project.data_dir / "labels.csv", dtype=str).iloc[:10]
    again = predictor.score_stays(own, pd.read_csv(project.data_dir / "events.csv", dtype=str, keep_default_na=False))
    assert np.allclose(again["proba_died"], predictor.predict_proba(grid_of(project)[:10])[:, 1], atol=1e-6)
    strict = dict(predictor.preprocessor.settings, after_prediction="stop")
    predictor.preprocessor.settings = strict
    late = predictor.score_stays(labels, events.astype(str))
    assert late["reason"].str.contains(r"event\(s\) after the prediction time \(leakage\)").any()

    with pytest.raises(ValueError, match=r"an event model's batch is label rows with their events"):
        monitor_report.check(labels, {}, predictor, params)
    # monitor: new stays whose heart rate reads 40 bpm higher and whose lactate was never charted.
    reference = monitor_reference.from_pipeline(params, project, None)
    events, labels = cohort.cohort(80, seed=7)
    heart = events["code"].eq("heart_rate")
    events.loc[heart, "numeric_value"] = (
        pd.to_numeric(events.loc[heart, "numeric_value"], errors="coerce") + 40
    ).astype(str)
    events = events[events["code"].ne("lactate")].astype(str)
    report = monitor_report.check(labels.astype(str), reference, predictor, params, events)
    features = report["features"]
    assert features["heart_rate_mean"]["drifted"] and features["heart_rate_mean"]["mean_shift_sd"] > 1
    assert features["lactate_last"]["null_rate"] == 1 and features["lactate_last"]["null_rate_change"] > 0.5
    assert not features["temperature_mean"]["drifted"] and not features["map_last"]["drifted"]
    assert report["performance"]["labelled_rows"] == report["rows"] - report["refused_rows"]

    tuning = _params(train__model="transformer", tune__trials=1, tune__pruner="none", train__max_epochs=1)
    (project.root / "params.yaml").write_text("seed: 42\n")
    study = tune(tuning, project, project.root / "params.yaml")
    assert study["trials"]["complete"] == 1


@pytest.mark.e2e
def test_the_icu_example_registers_a_gru_champion_over_its_baselines_and_predicts_new_stays(
    tmp_path, migrated_mlflow_db, prefect_server
):
    from mlflow import MlflowClient

    clone = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    # The documented command on a smaller cohort (written where the source writes it on first use) and a shorter
    # training, so that make test runs it.
    cohort.materialise(clone / "data", n_stays=STAYS)
    server = {"PREFECT_API_URL": prefect_server}
    done = sh(f".venv/bin/medflow run --params examples/icu_synthetic.yaml {SHRINK}", clone, timeout=900, **server)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("registered medflow-icu-synthetic v1 (champion: delta roc_auc vs baseline "), last
    store = f"sqlite:///{clone / 'mlruns/mlflow.db'}"
    card = MlflowClient(store, registry_uri=store).get_model_version("medflow-icu-synthetic", "1").description
    assert "## Sequences" in card and "Observation window: the 48 hours" in card
    full = (clone / "artifacts/icu_synthetic/register/model_card.md").read_text()  # MLflow keeps 5,000 characters
    for baseline in ("logistic_regression", "gradient_boosted_trees"):
        assert f"| {baseline} |" in full
    events, labels = cohort.cohort(30, seed=11)
    (clone / "new").mkdir()
    events.to_csv(clone / "new/events.csv", index=False)
    labels.drop(columns="outcome").to_csv(clone / "new/stays.csv", index=False)
    sh(".venv/bin/medflow predict --model models:/medflow-icu-synthetic@champion --input new/stays.csv "
       "--events new/events.csv --output new/scored.csv", clone)  # fmt: skip
    scored = pd.read_csv(clone / "new/scored.csv")
    assert len(scored) == 30 and scored["status"].eq("ok").all()
    # monitor reads params.yaml: the example's pipeline made the project's own.
    (clone / "params.yaml").write_text((clone / "examples/icu_synthetic.yaml").read_text())
    labels.to_csv(clone / "new/labelled.csv", index=False)
    sh(".venv/bin/medflow monitor --batch new/labelled.csv --events new/events.csv", clone, **server)
    report = json.loads(next((clone / "artifacts/monitor").glob("*/report.json")).read_text())
    assert report["rows"] == 30 and {"heart_rate_mean", "lactate_last"} <= set(report["features"])
