"""Shared builders for tests: a synthetic cohort written where a step expects its input."""

from __future__ import annotations

import pandas as pd

from medflow.data.synthetic import synthetic_cohort
from medflow.params import from_dict

KINDS = {
    "mrn": "patient_id",
    "name": "identifier",
    "dob": "identifier",
    "phone": "identifier",
    "visit_date": "text",
    "age": "numeric",
    "sex": "categorical",
    "smoker": "categorical",
    "site": "categorical",
    "bmi": "numeric",
    "glucose": "numeric",
    "systolic_bp": "numeric",
    "outcome": "target",
}


def cohort_params(data_docs: bool = False, **data):
    """data_docs: validate's HTML pages, which only tests/test_data_docs.py reads (rendering them takes ~0.5 s)."""
    raw = {
        "data": {
            "source": "data/cohort.csv",
            "target": "outcome",
            "patient_id": "mrn",
            "identifiers": ["name", "dob", "phone"],
            "positive_class": "disease",
            **data,
        },
        "validate": {"data_docs": data_docs},
        "train": {"max_epochs": 30, "patience": 5, "hidden": [16]},
        "register": {"model_name": "test-cohort", "min_primary": 0.5},
    }
    return from_dict(raw)


def valid_rows(n_patients: int = 120, seed: int = 0) -> pd.DataFrame:
    """What `validate` hands to `clean`: text columns plus _row_id, bad rows already removed."""
    df = synthetic_cohort(n_patients=n_patients, seed=seed, bad_rows=False)
    df = df.astype(object).where(df.notna(), None).astype("string")
    df.insert(0, "_row_id", range(len(df)))
    return df
