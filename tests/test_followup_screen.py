"""The survival tables medflow ships, and the screen that stops one forced into a binary target at validate when
its follow-up time is a feature (judged by the column's name and its relation to the target), with no false alarm
on the tables medflow already runs."""

import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from medflow.data import sources
from medflow.data.suite import ValidationFailed
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate
from medflow.validation.screens import FOLLOWUP, named_as_time

pytestmark = pytest.mark.usefixtures("salted")

# (demo, its event column, its time column, rows) as the packages name them.
SURVIVAL = [("whas500", "fstat", "lenfol", 500), ("gbsg2", "cens", "time", 686),
            ("veterans", "Status", "Survival_in_days", 137), ("aids", "censor", "time", 1151),
            ("rossi", "arrest", "week", 432)]  # fmt: skip


@pytest.mark.parametrize(("name", "event", "time", "rows"), SURVIVAL)
def test_each_survival_demo_is_written_with_the_packages_columns(tmp_path, name, event, time, rows):
    path = sources.resolve(name, Paths(root=tmp_path))
    df = pd.read_csv(path)
    assert path.name == f"{name}.csv" and len(df) == rows
    assert set(df[event].unique()) == {0, 1} and (df[time] > 0).all() and df[time].dtype == "int64"
    # Byte for byte the same when written again: a data.dvc can record it.
    again = sources.materialise_demo(name, tmp_path / "again")
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lenfol", True), ("futime", True), ("time", True), ("Survival_in_days", True), ("days_to_death", True),
     ("MonthsUntilRelapse", True), ("follow-up (years)", True), ("FollowUpTime", True), ("length of stay", True),
     ("LOS", True), ("week", True), ("days", True), ("stime", True), ("age", False), ("age_years", False),
     ("weekday", False), ("timestamp", False), ("mean radius", False), ("systolic_bp", False), ("s1", False),
     ("years_of_smoking", False), ("visit_date", False)],
)  # fmt: skip
def test_follow_up_names_in_the_words_people_use(name, expected):
    assert named_as_time(name) is expected


@pytest.mark.parametrize(("name", "event", "time"), [("whas500", "fstat", "lenfol"), ("rossi", "arrest", "week"),
                                                     ("gbsg2", "cens", "time")])  # fmt: skip
def test_a_survival_table_forced_into_a_binary_target_stops_at_validate_on_its_time(tmp_path, name, event, time):
    paths = Paths(root=tmp_path)
    with pytest.raises(ValidationFailed) as err:
        validate.run(from_dict({"data": {"source": name, "target": event}}), paths)
    line = str(err.value)
    assert "\n" not in line and f"suspected follow-up time in 1 column(s): {time!r} (ROC-AUC 0." in line
    assert f"-P 'validate.accept_leakage=[{time}]'" in line and f"-P 'data.exclude=[{time}]'" in line
    assert not paths.valid_rows.exists() and not paths.suite(name).exists()
    # Accepted, it stays a feature and the decision is recorded.
    accepted = validate.run(from_dict({"data": {"source": name, "target": event},
                                       "validate": {"accept_leakage": [time]}}), paths)  # fmt: skip
    assert accepted["leakage"]["accepted"][time]["rule"] == FOLLOWUP
    assert accepted["rows_in"] == accepted["rows_valid"] + accepted["rows_quarantined"]


def test_no_false_alarm_on_the_tables_medflow_runs(tmp_path):
    cases = {
        "breast_cancer": ({"source": "breast_cancer", "target": "diagnosis", "positive_class": "malignant"}, None),
        "synthetic_cohort": (
            {
                "source": "synthetic_cohort",
                "target": "outcome",
                "patient_id": "mrn",
                "identifiers": ["name", "phone", "dob"],
            },
            None,
        ),  # fmt: skip
    }
    diabetes = load_diabetes(as_frame=True).frame
    diabetes["target"] = (diabetes["target"] > diabetes["target"].median()).map({True: "high", False: "low"})
    cases["diabetes"] = ({"source": "data/diabetes.csv", "target": "target"}, diabetes)
    for name, (data, table) in cases.items():
        paths = Paths(root=tmp_path / name)
        if table is not None:
            paths.data_dir.mkdir(parents=True)
            table.to_csv(paths.data_dir / "diabetes.csv", index=False)
        summary = validate.run(from_dict({"data": data}), paths)
        assert not summary["leakage"]["accepted"] and summary["rows_valid"] > 0, name
