"""A synthetic outpatient cohort with the faults real exports have, for tests and the bring-your-own-table demo.

Every value is generated: names, record numbers and phone numbers are fake but look real, so that the
privacy rules are exercised on the shapes they must catch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Ella",
    "Femi",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lea",
    "Mo",
    "Nia",
]
_LAST = ["Smith", "Okafor", "Nguyen", "Garcia", "Kowalski", "Haddad", "Silva", "Tanaka", "Müller", "Brown"]


def synthetic_cohort(
    n_patients: int = 400, seed: int = 0, bad_rows: bool = True, extra_label: bool = True
) -> pd.DataFrame:
    """One row per visit; 1-4 visits per patient; outcome depends on age, bmi, glucose and smoking.

    With bad_rows, a few rows break the data contract in ways validation must quarantine (impossible
    age, text in a numeric column, unknown category, missing outcome) and a few are exact duplicates.
    """
    rng = np.random.default_rng(seed)
    visits = rng.integers(1, 5, size=n_patients)
    pid = np.repeat(np.arange(n_patients), visits)
    n = len(pid)

    age = rng.integers(18, 90, size=n_patients)[pid].astype(float)
    sex = rng.choice(["F", "M"], size=n_patients)[pid]
    smoker = rng.choice(["no", "yes"], p=[0.7, 0.3], size=n_patients)[pid]
    site = rng.choice(["north", "south", "east"], size=n)
    bmi = np.round(rng.normal(27, 5, size=n_patients)[pid] + rng.normal(0, 0.8, size=n), 1)
    glucose = np.round(rng.normal(100, 20, size=n) + 0.4 * (bmi - 27) * 3, 0)
    sbp = np.round(rng.normal(125, 15, size=n) + 0.3 * (age - 50), 0)
    logit = -0.6 + 0.05 * (age - 50) + 0.15 * (bmi - 27) + 0.04 * (glucose - 100) + 1.2 * (smoker == "yes")
    outcome = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "disease", "healthy").astype(object)
    if extra_label:
        # Some exports carry a third value the model should treat as "not the positive class".
        outcome[rng.random(n) < 0.04] = "inconclusive"

    first = rng.choice(_FIRST, size=n_patients)[pid]
    last = rng.choice(_LAST, size=n_patients)[pid]
    df = pd.DataFrame(
        {
            "mrn": [f"MRN{100000 + 7 * p:07d}" for p in pid],
            "name": [f"{f} {s}" for f, s in zip(first, last, strict=True)],
            "dob": [f"{2024 - int(a)}-{1 + p % 12:02d}-{1 + p % 28:02d}" for a, p in zip(age, pid, strict=True)],
            "phone": [f"+1-555-{(p * 37) % 1000:03d}-{(p * 91) % 10000:04d}" for p in pid],
            "visit_date": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 600, size=n), unit="D"),
            "age": age,
            "sex": sex,
            "smoker": smoker,
            "site": site,
            "bmi": bmi,
            "glucose": glucose,
            "systolic_bp": sbp,
            "outcome": outcome,
        }
    )
    df["visit_date"] = df["visit_date"].dt.strftime("%Y-%m-%d")
    for col, rate in (("bmi", 0.05), ("glucose", 0.08), ("systolic_bp", 0.03)):
        df.loc[rng.random(n) < rate, col] = np.nan
    df = df.astype({"age": object, "bmi": object, "glucose": object})

    if bad_rows:
        bad = rng.choice(n, size=6, replace=False)
        df.loc[bad[0], "age"] = 999.0  # impossible age
        df.loc[bad[1], "age"] = -4.0
        df.loc[bad[2], "bmi"] = "abc"  # text in a numeric column
        df.loc[bad[3], "sex"] = "unknown?"  # value outside the category set
        df.loc[bad[4], "outcome"] = np.nan  # no label
        df.loc[bad[5], "glucose"] = "n.d."
        dups = df.iloc[rng.choice(n, size=5, replace=False)]
        df = pd.concat([df, dups], ignore_index=True)
        df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    return df
