"""A table as a hospital exports it: visits of patients with a record number, a name, a visit date, labs written
for people ("1,262", "n/a"), a category and a binary outcome. Made here, so it holds no real patient's data."""

from __future__ import annotations

import numpy as np
import pandas as pd


def human_number(x: float) -> str:
    """As a spreadsheet writes it: thousands grouped with commas."""
    return f"{x:,.0f}"


def visits(n_patients: int = 300, seed: int = 0, first_mrn: int = 400000, grouped: bool = True) -> pd.DataFrame:
    """2-3 visits per patient; LDH of 1,000 and above written with a thousands separator (the sickest patients)
    unless grouped is False; a few labs missing as "n/a"."""
    rng = np.random.default_rng(seed)
    per = rng.integers(2, 4, n_patients)
    pid = np.repeat(np.arange(first_mrn, first_mrn + n_patients), per)
    n = len(pid)
    severity = np.repeat(rng.normal(0, 1, n_patients), per) + rng.normal(0, 0.5, n)
    age = np.repeat(rng.integers(30, 90, n_patients), per)
    ldh = np.exp(6.3 + 0.45 * severity + rng.normal(0, 0.2, n)).round()
    crp = np.round(np.exp(2 + 0.5 * severity + rng.normal(0, 0.4, n)), 1)
    risk = 1.2 * severity + (age - 60) / 20 + rng.normal(0, 0.7, n)
    first = rng.choice(["anna", "ben", "carla", "dev", "emma", "farid"], n_patients)
    last = rng.choice(["smith", "okafor", "nguyen", "garcia", "kowalski"], n_patients)
    df = pd.DataFrame({
        "mrn": pid,
        "name": np.repeat([f"{a} {b}" for a, b in zip(first, last, strict=True)], per),
        "visit_date": [f"2025-{m:02d}-{d:02d}" for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n),
                                                                strict=True)],
        "age": age,
        "sex": np.repeat(rng.choice(["F", "M"], n_patients), per),
        "ldh": [human_number(v) if grouped else f"{v:.0f}" for v in ldh],
        "crp": crp.astype(str),
        "outcome": np.where(risk > 0.8, "icu", "ward"),
    })  # fmt: skip
    df.loc[rng.random(n) < 0.05, "crp"] = "n/a"
    return df
