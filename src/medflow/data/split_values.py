"""The column split.by=time or site reads, as the split reads it: one reading for validate's check that every row
has a value and for clean, which hands it to split."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _numbers_and_dates(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each value read as a number (a year, a day count), else as a date-time (UTC: offsets either side of a clock
    change are one column)."""
    if pd.api.types.is_datetime64_any_dtype(values):  # already dates: to_numeric would read NaT as a number
        return pd.Series(np.nan, index=values.index), pd.to_datetime(values, utc=True)
    number = pd.to_numeric(values, errors="coerce")
    dates = pd.to_datetime(values.where(number.isna()), errors="coerce", format="mixed", utc=True)
    return number, dates


def split_values(values: pd.Series, by: str) -> np.ndarray:
    """split.by=time: the column as numbers or as dates (nanoseconds), NaN where missing; a column of both stops
    in one line, as the two cannot be ordered together. site: as text, a site coded as a whole number (an
    institution's code, parsed by validate as a float) without a decimal point: "3", not "3.0"."""
    if by == "site":
        if pd.api.types.is_float_dtype(values) and np.array_equal(values.dropna(), values.dropna().round()):
            values = values.astype("Int64")
        return values.astype("string").to_numpy(dtype=object, na_value=None)
    number, dates = _numbers_and_dates(values)
    if number.notna().any() and dates.notna().any():
        raise ValueError(
            f"column {values.name!r}, rule: split.by=time reads one kind of time; {int(number.notna().sum())} values "
            f"are numbers and {int(dates.notna().sum())} dates: write them all one way"
        )
    if dates.notna().any():
        return np.where(dates.notna(), dates.astype("int64"), np.nan).astype("float64")
    return number.to_numpy(dtype="float64")


def without_value(values: pd.Series, by: str) -> np.ndarray:
    """The rows the split cannot place: no value, or a time that reads as neither a number nor a date. Each row's
    own value decides, so a table read whole or in chunks gives the same rows."""
    if by == "site":
        return np.asarray(pd.isna(split_values(values, by)), dtype=bool)
    number, dates = _numbers_and_dates(values)
    return (number.isna() & dates.isna()).to_numpy()
