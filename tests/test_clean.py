import json

import pandas as pd
import pytest
from cohort import KINDS, cohort_params, valid_rows

from medflow.data.features import encode_labels
from medflow.privacy.keys import SaltMissing
from medflow.steps import clean


def write_validated(paths, df, kinds=KINDS):
    out = paths.step_dir("validate")
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(paths.valid_rows, index=False)
    (out / "columns.json").write_text(json.dumps(kinds))


def test_identifiers_never_become_features_and_patient_id_is_hashed(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "s3cret")
    df = valid_rows()
    write_validated(project, df)
    clean.run(cohort_params(), project)
    out = pd.read_parquet(project.cleaned)
    for phi in ("mrn", "name", "dob", "phone", "visit_date"):
        assert phi not in out.columns
    assert set(df["mrn"]).isdisjoint(set(out["_patient_key"]))
    # Same patient, same key: grouping by patient still works after pseudonymisation.
    assert out.groupby("_patient_key")["_row_id"].count().max() > 1
    assert out["_patient_key"].nunique() == df["mrn"].nunique()


def test_salt_changes_keys_and_missing_salt_is_a_clear_error(project, monkeypatch):
    ids = pd.Series(["MRN1", "MRN2"])
    assert clean.pseudonymise(ids, "a").tolist() != clean.pseudonymise(ids, "b").tolist()
    monkeypatch.delenv("MEDFLOW_SALT", raising=False)
    write_validated(project, valid_rows(20))
    with pytest.raises(SaltMissing, match="MEDFLOW_SALT is not set"):
        clean.run(cohort_params(), project)


def test_duplicates_are_quarantined_with_the_row_they_repeat(project, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "s")
    df = valid_rows(30)
    dup = df.iloc[[3]].copy()
    dup["_row_id"] = len(df)
    write_validated(project, pd.concat([df, dup], ignore_index=True))
    summary = clean.run(cohort_params(), project)
    q = pd.read_csv(project.step_dir("clean") / "quarantine.csv")
    assert q["_row_id"].tolist() == [len(df)]
    assert q["reason"].tolist() == [f"duplicate: exact repeat of row {df['_row_id'].iloc[3]}"]
    assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"] == len(df) + 1


def test_positive_class_folds_extra_label_values_into_negative():
    df = valid_rows(60)
    schema = clean.build_schema(KINDS, cohort_params().data, df["outcome"])
    assert schema.classes == ["not_disease", "disease"]
    y = encode_labels(df["outcome"], schema)
    assert y.sum() == (df["outcome"] == "disease").sum()
    assert "inconclusive" in set(df["outcome"])  # the cohort carries a third label value


@pytest.mark.parametrize("spelt", ["TRUE", "True", "true"])
def test_a_boolean_positive_class_names_the_label_as_the_table_spells_it(spelt):
    # `-P data.positive_class=True` reaches params as YAML's boolean; R writes TRUE/FALSE, pandas True/False.
    df = valid_rows(60)
    false = {"TRUE": "FALSE", "True": "False", "true": "false"}[spelt]
    labels = df["outcome"].map({"disease": spelt}).fillna(false)
    schema = clean.build_schema(KINDS, cohort_params(positive_class=True).data, labels)
    assert schema.classes == [f"not_{spelt}", spelt] and schema.positive_class == spelt
    assert encode_labels(labels, schema).sum() == (df["outcome"] == "disease").sum()


def test_a_label_spelt_two_ways_takes_the_positive_class_only_as_written():
    labels = pd.Series(["True", "true", "False"] * 20)
    assert clean.build_schema(KINDS, cohort_params(positive_class=True).data, labels).positive_class == "true"
    with pytest.raises(clean.CleanError, match="positive_class='TRUE' never occurs"):
        clean.build_schema(KINDS, cohort_params(positive_class="TRUE").data, labels)


def test_multiclass_without_positive_class():
    df = valid_rows(60)
    schema = clean.build_schema(KINDS, cohort_params(positive_class=None).data, df["outcome"])
    assert schema.classes == ["disease", "healthy", "inconclusive"]
    assert set(encode_labels(df["outcome"], schema)) == {0, 1, 2}


def test_undeclared_identifier_named_column_is_dropped():
    kinds = {**KINDS, "zip_code": "numeric"}
    schema = clean.build_schema(kinds, cohort_params().data, valid_rows(10)["outcome"])
    assert "zip_code" not in schema.features
    assert "identifier" in schema.dropped["zip_code"]


def test_unknown_positive_class_is_a_clear_error():
    with pytest.raises(clean.CleanError, match="positive_class='sick' never occurs"):
        clean.build_schema(KINDS, cohort_params(positive_class="sick").data, valid_rows(10)["outcome"])
