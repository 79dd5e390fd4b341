"""Suspected identifiers found by their values, before any suite, profile or quarantine file is written.

A column the user did not declare is judged by what it holds: person names, record numbers, e-mail addresses,
phone and social security numbers, street addresses and dates of birth. A finding names the column, the kind
and a count, never a value. The rules are deliberately conservative: a false alarm costs one line in
params.yaml (`data.identifiers` or `data.exclude`), a miss puts a patient's name in a committed file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medflow.privacy.phi import looks_like_identifier
from medflow.privacy.scanner import PATTERNS

# Values inspected per column: enough for shares, cheap on 2,000 columns.
SAMPLE = 2000
# Share of a column's values that must look like one kind of identifier for the column to be suspected.
SHARE = 0.3

_ANY = {kind: PATTERNS[kind] for kind in ("email", "phone", "ssn", "mrn")}
# Given and family names, "Family, Given", a title, a particle (van, de): two to four capitalised words.
_NAME = re.compile(
    r"^(?:(?:Dr|Mr|Mrs|Ms|Prof)\.?\s+)?[A-ZÀ-Þ][a-zß-ÿ'’-]+,?(?:\s+(?:(?:van|von|de|da|del|der|le|la)\s+)?"
    r"[A-ZÀ-Þ][a-zß-ÿ'’.-]*){1,3}$"
)
# Record numbers: a short letter prefix glued to 4+ digits (MRN0012345, P-000123), or 6+ digits with a leading 0.
_RECORD = re.compile(r"^(?:[A-Za-z]{1,5}[-_#:]?\d{4,}|0\d{5,})$")
_STREET = re.compile(
    r"^\d{1,6}\s+(?:[A-Za-z0-9.'-]+\s+){1,5}(?:street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd|way"
    r"|court|ct|place|pl|terrace|close|square|sq|crescent|highway|hwy)\b\.?",
    re.IGNORECASE,
)
_DATE = re.compile(r"^\s*(\d{4})[-/.]\d{1,2}[-/.]\d{1,2}|^\s*\d{1,2}[-/.]\d{1,2}[-/.](\d{4})")
# Dates spread over this many years (5th to 95th percentile) belong to people's lives, not to visits.
BIRTH_SPAN_YEARS = 15


@dataclass(frozen=True)
class Suspect:
    column: str
    kind: str  # what the column looks like: "name" (by its header), "person name", "e-mail", ...
    count: int  # values that look like it (0 for a header match)
    of: int

    def __str__(self) -> str:
        if self.kind == "name":
            return f"column {self.column!r} is named like an identifier"
        if self.kind == "row numbers":
            unnamed = " (no name in the header)" if self.column.startswith("Unnamed: ") else ""
            return (f"column {self.column!r}{unnamed}: its {self.of} values are the rows' numbers in the file, a row "
                    "index the exporting tool wrote (R's write.csv, pandas' to_csv), not a measurement")  # fmt: skip
        return f"column {self.column!r}: {self.count} of {self.of} sampled values look like {self.kind}"


def _sample(values: pd.Series) -> pd.Series:
    values = values.dropna().astype(str)
    return values.sample(SAMPLE, random_state=0) if len(values) > SAMPLE else values


def _share(counts: pd.Series, pattern: re.Pattern[str], anywhere: bool = False) -> int:
    """Values (counts: value -> rows) that match: each distinct value is tested once."""
    test = (lambda v: pattern.search(v) is not None) if anywhere else (lambda v: pattern.match(v.strip()) is not None)
    return int(sum(c for v, c in counts.items() if test(v)))


def _birth_dates(values: pd.Series) -> int:
    """How many values are dates, when the dates spread over decades (else 0)."""
    parts = values.str.extract(_DATE)
    years = parts[0].fillna(parts[1]).dropna().astype(int)
    if len(years) < 2:
        return 0
    lo, hi = years.quantile([0.05, 0.95])
    return len(years) if hi - lo >= BIRTH_SPAN_YEARS else 0


def suspect_by_values(column: str, values: pd.Series, free_text: bool = False) -> Suspect | None:
    """The first kind of identifier that a share of the column's values looks like, or None.

    In free text one e-mail, phone, SSN or record number is enough: a note names one patient at a time. A column
    of names or dates with every value distinct looks like free text, so the shape rules apply to it as well.
    """
    sample = _sample(values)
    n = len(sample)
    if not n:
        return None
    if pd.to_numeric(sample, errors="coerce").notna().all():
        # Measurements: only a record number with its leading zeros kept can hide among plain numbers.
        hits = int(sample.str.fullmatch(r"\s*0\d{5,}\s*").sum())
        return Suspect(column, "record numbers", hits, n) if hits >= SHARE * n and sample.nunique() >= 10 else None
    counts = sample.value_counts()
    for kind, pattern in _ANY.items():
        hits = _share(counts, pattern, anywhere=True)
        if hits and (free_text or hits >= SHARE * n):
            return Suspect(column, {"email": "e-mail addresses", "phone": "phone numbers", "ssn": "SSNs",
                                    "mrn": "record numbers"}[kind], hits, n)  # fmt: skip
    distinct = len(counts)
    checks = (
        ("record numbers", _RECORD, distinct >= 10),
        ("person names", _NAME, distinct >= 10),
        ("street addresses", _STREET, True),
    )
    for kind, pattern, plausible in checks:
        hits = _share(counts, pattern) if plausible else 0
        if plausible and hits >= SHARE * n:
            return Suspect(column, kind, hits, n)
    hits = _birth_dates(sample)
    if hits >= SHARE * n:
        return Suspect(column, "dates of birth", hits, n)
    return None


def _zero_padded(df: pd.DataFrame) -> dict[str, Suspect]:
    """Record numbers hiding among plain-number columns (their leading zeros kept), column by column."""
    found = {}
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]):
            continue  # a number's text never starts with a zero followed by digits: its leading zeros are gone
        cells = df[col].dropna()
        text = cells.astype(str)
        zero = text.str.startswith("0").to_numpy(dtype=bool)
        hit = np.zeros(len(text), dtype=bool)
        hit[zero] = text[zero].str.fullmatch(r"0\d{5,}").to_numpy(dtype=bool)
        n = int(hit.sum())
        if n and n >= SHARE * len(cells) and cells[hit].nunique() >= 10:
            found[col] = Suspect(col, "record numbers", n, len(cells))
    return found


def _row_numbers(numbers: Mapping[str, np.ndarray], positions: np.ndarray) -> dict[str, Suspect]:
    """Columns holding each row's number in the file, counted from 0 or 1: an index the export wrote, which a
    model would learn the file's order from (a table sorted by date or outcome leaks it)."""
    found = {}
    for col, x in numbers.items():
        start = x[0] - positions[0] if len(x) >= 10 else np.nan
        if start in (0, 1) and np.array_equal(x - start, positions):  # the first value rules out nearly every column
            found[col] = Suspect(col, "row numbers", len(x), len(x))
    return found


def suspects(
    df: pd.DataFrame,
    declared: set[str],
    text_columns: set[str],
    numeric_columns: set[str] = frozenset(),
    rows: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = None,
) -> list[Suspect]:
    """Undeclared columns that look like identifiers by name or by values, in column order. numeric_columns (every
    value a plain number) are only checked for record numbers, and, given rows (each row's position in the file, 0
    for its first data row, and the numbers each numeric column parsed to), for row numbers."""
    by_name = {c for c in df.columns if c not in declared and looks_like_identifier(str(c))}
    checked = [c for c in df.columns if c in numeric_columns and c not in declared | by_name]
    padded = _zero_padded(df[checked])
    if rows is not None:
        positions, numbers = rows
        padded |= _row_numbers({c: numbers[c] for c in checked}, positions)
    found = []
    for col in df.columns:
        if col in declared:
            continue
        if col in by_name:
            found.append(Suspect(col, "name", 0, 0))
        elif col in numeric_columns:
            found += [padded[col]] if col in padded else []
        elif hit := suspect_by_values(col, df[col], free_text=col in text_columns):
            found.append(hit)
    return found
