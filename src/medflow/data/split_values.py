"""The column split.by=time or site reads, as the split reads it: one reading for validate's check that every row
has a value and for clean, which hands it to split."""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_values(values: pd.Series, by: str) -> np.ndarray:
    """split.by=time: the column as numbers (a year, a day count) or dates (as nanoseconds), NaN where missing;
    site: as text, a site coded as a whole number (an institution's code, parsed by validate as a float) without
    a decimal point: "3", not "3.0"."""
    if by == "site":
        if pd.api.types.is_float_dtype(values) and np.array_equal(values.dropna(), values.dropna().round()):
            values = values.astype("Int64")
        return values.astype("string").to_numpy(dtype=object, na_value=None)
    number = pd.to_numeric(values, errors="coerce")
    if number.notna().sum() >= values.notna().sum():
        return number.to_numpy(dtype="float64")
    dates = pd.to_datetime(values, errors="coerce", format="mixed")
    return np.where(dates.notna(), dates.astype("int64"), np.nan).astype("float64")


def without_value(values: pd.Series, by: str) -> np.ndarray:
    """The rows the split cannot place: no value, or a time that reads as neither a number nor a date."""
    return np.asarray(pd.isna(split_values(values, by)), dtype=bool)
