"""data.kind=signals: one reader for DICOM Waveform (pydicom's 12-lead ECG) and WFDB records (written here with
wfdb.wrsamp), resampled and standardised per lead, missing and flat leads refused; synthetic ECG-like records from
validate to a 1D CNN beside the summary baselines, and predict on a manifest."""

import json

import numpy as np
import pandas as pd
import pytest
import wfdb
from pydicom.data import get_testdata_file
from usercmd import scratch_clone, sh

from medflow.models.bundle import Predictor
from medflow.params import from_dict
from medflow.pipeline import run_step
from medflow.promotion.evidence import gate_evidence
from medflow.signals import synthetic
from medflow.signals.read import prepare, read_record

ECG = get_testdata_file("waveform_ecg.dcm")
RECORDS = 200
SHRINK = "-P train.max_epochs=8 -P evaluate.n_boot=200 -P register.gate.n_boot=200"


def test_one_reader_reads_dicom_waveform_and_wfdb_resamples_and_refuses_missing_or_flat_leads(tmp_path):
    dicom = read_record(ECG)
    assert dicom.rate_hz == 1000 and dicom.samples.shape == (10000, 12) and dicom.leads[1] == "Lead II"
    z, features, why = prepare(dicom, ["Lead II", "Lead V1"], 100, 10, 1e-3)
    assert why == "" and z.shape == (1000, 2) and z.dtype == np.float32
    assert np.allclose(z.mean(0), 0, atol=1e-5) and np.allclose(z.std(0), 1, atol=1e-4)
    assert set(features) == {f"{lead}_{f}" for lead in ("Lead II", "Lead V1")
                             for f in ("std", "range", "mean_abs_diff", "crossings")}  # fmt: skip

    t = np.arange(2500) / 250
    signal = np.column_stack([np.sin(2 * np.pi * 1.2 * t), np.zeros_like(t)])
    wfdb.wrsamp("flat", fs=250, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signal, fmt=["16", "16"],
                write_dir=str(tmp_path))  # fmt: skip
    record = read_record(tmp_path / "flat.hea")
    assert record.rate_hz == 250 and record.leads == ["I", "II"]
    z, _, why = prepare(record, ["I"], 100, 10, 1e-3)
    assert why == "" and z.shape == (1000, 1)
    # Resampled, the 1.2 Hz sine keeps its frequency: 24 crossings of its mean in 10 s.
    assert abs(int((np.diff(np.sign(z[:, 0])) != 0).sum()) - 24) <= 1
    assert prepare(record, ["I", "II"], 100, 10, 1e-3)[2] == "flat lead(s): II"
    assert prepare(record, ["I", "V1"], 100, 10, 1e-3)[2] == "lead(s) missing: V1"
    assert prepare(record, ["I"], 100, 20, 1e-3)[2].startswith("shorter than data.signals.seconds")


def test_a_cnn_trains_on_synthetic_ecgs_beside_summary_baselines_and_scores_a_manifest(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "signal-salt")
    project.data_dir.mkdir(parents=True, exist_ok=True)
    synthetic.materialise(project.data_dir, n=100, name="ecg")
    raw = {
        "data": {"kind": "signals", "source": "data/ecg.csv", "target": "rhythm", "positive_class": "irregular",
                 "patient_id": "patient_id", "signals": {"leads": ["I", "II"], "rate_hz": 50}},
        "train": {"model": "cnn1d", "hidden": [8, 8], "max_epochs": 3, "patience": 3, "batch_size": 32},
        "evaluate": {"n_boot": 100},
        "register": {"model_name": "test-ecg", "gate": {"n_boot": 100}},
    }  # fmt: skip
    params = from_dict(raw)
    summary = run_step("validate", params, project)
    assert summary["grid"] == [summary["rows_valid"], 500, 2] and summary["rows_quarantined"] == 3
    assert set(summary["quarantined_by_reason"]) == {"flat lead(s): II", "lead(s) missing: II"}
    held = pd.read_csv(project.step_dir("validate") / "quarantine.csv")
    assert len(held) == 3 and summary["rows_in"] == summary["rows_valid"] + len(held)
    for step in ("clean", "split", "train", "evaluate"):
        run_step(step, params, project)
    assert json.loads(project.summary("train").read_text())["grid"] == [500, 2]
    _, _, _, report = gate_evidence(params, project, json.loads(project.metrics.read_text()), None)
    assert {"baseline logistic_regression", "baseline gradient_boosted_trees"} <= set(report["baseline_deltas"])

    predictor = Predictor(project.model_bundle)
    folder = project.data_dir
    batch = pd.DataFrame({"path": [str(folder / "ecg/r0000.hea"), str(folder / "ecg/r0007.hea"), ECG, "nowhere.hea"]})
    scored = predictor.score(batch)
    assert list(scored["status"]) == ["ok", "refused", "refused", "refused"]
    assert list(scored["reason"][1:]) == [
        "lead(s) missing: II", "lead(s) missing: I, II", "not a readable DICOM Waveform or WFDB record"
    ]  # fmt: skip
    assert 0 <= scored.loc[0, "proba_irregular"] <= 1


@pytest.mark.e2e
def test_the_ecg_example_registers_a_cnn_read_through_the_dicom_reader(tmp_path, migrated_mlflow_db, prefect_server):
    clone = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    # The documented command on fewer records (written where the source writes them on first use), so that make
    # test runs it.
    synthetic.materialise(clone / "data", n=RECORDS)
    done = sh(
        f".venv/bin/medflow run --params examples/ecg_synthetic.yaml {SHRINK}",
        clone,
        timeout=900,
        PREFECT_API_URL=prefect_server,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("registered medflow-ecg-synthetic v1 (champion: "), last
    gate = json.loads((clone / "artifacts/ecg_synthetic/register/gate.json").read_text())
    assert gate["models"]["candidate"]["roc_auc"] > gate["models"]["baseline logistic_regression"]["roc_auc"]
