import json

import numpy as np
import pandas as pd
import pytest
from cohort import cohort_params, valid_rows
from test_clean import write_validated

from medflow.params import SplitParams
from medflow.steps import clean, split


@pytest.fixture
def cleaned(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "s")
    write_validated(project, valid_rows(200))
    clean.run(cohort_params(), project)
    return project


def test_no_patient_in_two_splits_and_fractions_roughly_hold(cleaned):
    summary = split.run(cohort_params(), cleaned)
    m = pd.read_csv(cleaned.manifest)
    assert list(m.columns) == ["row_id", "patient_key", "split"]
    assert m.groupby("patient_key")["split"].nunique().max() == 1
    patients = summary["patients"]
    total = sum(patients.values())
    assert abs(patients["test"] / total - 0.15) < 0.05
    assert abs(patients["val"] / total - 0.15) < 0.05


def test_split_is_stratified_by_label(cleaned):
    summary = split.run(cohort_params(), cleaned)
    rates = {s: c[1] / sum(c) for s, c in summary["class_counts"].items()}
    assert max(rates.values()) - min(rates.values()) < 0.12


def test_same_seed_same_manifest_other_seed_other_manifest(cleaned):
    first = split.run(cohort_params(), cleaned)["manifest_sha256"]
    assert split.run(cohort_params(), cleaned)["manifest_sha256"] == first
    other = cohort_params().model_copy(update={"seed": 7})
    assert split.run(other, cleaned)["manifest_sha256"] != first


def test_identical_feature_rows_of_different_patients_stay_together():
    df = pd.DataFrame(
        {
            "_row_id": range(40),
            "_patient_key": [f"p{i}" for i in range(40)],
            "x": [1.0, 1.0] + list(range(38)),
            "_label": [0, 1] * 20,
        }
    )
    groups = split.leakage_groups(df, ["x"])
    assert groups[0] == groups[1]
    where = split.assign_splits(groups, df["_label"].to_numpy(), SplitParams(), seed=0)
    assert where[0] == where[1]
    split.check_no_leakage(df, where, ["x"])


def test_leak_check_names_what_leaked():
    df = pd.DataFrame({"_row_id": range(4), "_patient_key": ["a", "a", "b", "c"], "x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(split.LeakageError, match="1 patient\\(s\\) appear in more than one split"):
        split.check_no_leakage(df, np.array(["train", "test", "train", "val"]), ["x"])
    with pytest.raises(split.LeakageError, match="identical feature row"):
        split.check_no_leakage(
            df.assign(x=[1.0, 1.0, 3.0, 4.0], _patient_key=["a", "b", "c", "d"]),
            np.array(["train", "test", "train", "val"]),
            ["x"],
        )


def test_manifest_holds_no_raw_patient_ids(cleaned):
    split.run(cohort_params(), cleaned)
    text = cleaned.manifest.read_text()
    assert "MRN" not in text
    assert json.loads(cleaned.summary("split").read_text())["rows"]["train"] > 0
