"""Suspected identifiers found by their values, before any suite, profile or quarantine file is written.

A column the user did not declare is judged by what it holds: person names, record numbers, e-mail addresses,
phone and social security numbers, street addresses and dates of birth. A finding names the column, the kind
and a count, never a value. The rules are deliberately conservative: a false alarm costs one line in
params.yaml (`data.identifiers` or `data.exclude`), a miss puts a patient's name in a committed file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

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
# The same shape in any case ("jane roe", "ROE, JANE"): taken for names only when many values are distinct and
# no word is one that phrases ("follow up", "none") are made of.
_NAME_ANY_CASE = re.compile(
    r"^(?:(?:dr|mr|mrs|ms|prof)\.?\s+)?[a-zß-ÿ][a-zß-ÿ'’-]+,?(?:\s+(?:(?:van|von|de|da|del|der|le|la)\s+)?"
    r"[a-zß-ÿ][a-zß-ÿ'’.-]*){1,3}$",
    re.IGNORECASE,
)
_PHRASE_WORD = re.compile(
    r"\b(?:a|an|the|of|to|in|on|at|by|for|with|and|or|no|not|none|up|off|per|as|is|was|non|post|pre|left|right"
    r"|high|low|normal|mild|severe|stable|positive|negative|follow|routine|pain|day|days|week|weeks|unknown|other)\b",
    re.IGNORECASE,
)
# Names of id columns (ID, id, subject_id, patientId, PatientID), whose values, unless they are row numbers or a
# few codes (site_id), single out a record.
_ID_NAME = re.compile(r"(?:^|[^A-Za-z0-9])[Ii][Dd]$|[a-z0-9](?:Id|ID)$|^ID$")
# Share of distinct values above which a column's values single out records or people, not a handful of codes.
DISTINCT = 0.1
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
    # (distinct values, rows) of a record-number column whose values repeat, as a patient's visits do: the
    # patient id, which must keep a patient's rows in one split, not only an identifier to drop.
    repeats: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.kind == "name":
            said = f"column {self.column!r} is named like an identifier"
        elif self.kind == "id":
            said = f"column {self.column!r} is named like an id and {self.count} of its {self.of} values are distinct"
        elif self.kind == "row numbers":
            unnamed = " (no name in the header)" if self.column.startswith("Unnamed: ") else ""
            return (f"column {self.column!r}{unnamed}: its {self.of} values are the rows' numbers in the file, a row "
                    "index the exporting tool wrote (R's write.csv, pandas' to_csv), not a measurement")  # fmt: skip
        else:
            said = f"column {self.column!r}: {self.count} of {self.of} sampled values look like {self.kind}"
        if self.repeats:
            said += (f"; its values repeat over rows as a patient's visits do ({self.repeats[0]} distinct in "
                     f"{self.repeats[1]} rows): a patient id")  # fmt: skip
        return said


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


def _lowercase_names(counts: pd.Series) -> int:
    """Rows of names written in any case: values of name shape, no phrase word, many of them distinct (names
    repeat only with a patient's visits, categories over and over)."""
    names = counts[[_NAME_ANY_CASE.match(v.strip()) is not None and not _PHRASE_WORD.search(v) for v in counts.index]]
    rows = int(names.sum())
    return rows if len(names) >= 10 and len(names) >= DISTINCT * rows else 0


def suspect_by_values(column: str, values: pd.Series) -> Suspect | None:
    """The first kind of identifier that a share of the column's values looks like, or None.

    One e-mail, phone, SSN or record number among text is enough, whatever kind the column is taken for: a note
    names one patient at a time, and a column of notes that repeat ("routine follow up") reads as categories. A
    column of names or dates with every value distinct looks like free text, so the shape rules apply to it too.
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
        if hits:
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
    hits = _lowercase_names(counts)
    if hits >= SHARE * n:
        return Suspect(column, "person names", hits, n)
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


def _id_column(column: str, values: pd.Series) -> Suspect | None:
    """A column named like an id whose values are too many to be a few codes."""
    if not _ID_NAME.search(column.strip()):
        return None
    present = values.dropna()
    distinct = int(present.nunique())
    return (
        Suspect(column, "id", distinct, len(present))
        if distinct >= 10 and distinct >= DISTINCT * len(present)
        else None
    )


# Headers of record numbers (beside an id-named column's): the ones whose repeated values are a patient's visits.
_RECORD_NAME = re.compile(
    r"(?:^|_)(?:mrn|medical_?record\w*|record_?(?:number|no|nr)|nhs_?number|member_?id|patient_?(?:no|nr|number))"
    r"(?:$|_)",
    re.IGNORECASE,
)


def _as_patient_id(found: Suspect, values: pd.Series) -> Suspect:
    """found, marked as the patient id when it holds record numbers that repeat across rows."""
    record = found.kind in ("id", "record numbers") or (
        found.kind == "name" and _RECORD_NAME.search(re.sub(r"[^0-9A-Za-z]+", "_", found.column)) is not None
    )
    present = values.dropna()
    distinct = int(present.nunique()) if record else 0
    return replace(found, repeats=(distinct, len(present))) if record and 2 <= distinct < len(present) else found


def suspects(
    df: pd.DataFrame,
    declared: set[str],
    numeric_columns: set[str] = frozenset(),
    rows: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = None,
    patient_id: bool = False,
) -> list[Suspect]:
    """Undeclared columns that look like identifiers by name or by values, in column order. numeric_columns (every
    value a plain number) are only checked for record numbers and ids, and, given rows (each row's position in the
    file, 0 for its first data row, and the numbers each numeric column parsed to), for row numbers. With
    patient_id (none is declared), the first record-number column whose values repeat is marked as the patient id."""
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
            hit = Suspect(col, "name", 0, 0)
        elif col in padded:
            hit = padded[col]
        else:
            hit = _id_column(str(col), df[col])
            if hit is None and col not in numeric_columns:
                hit = suspect_by_values(col, df[col])
        if hit is None:
            continue
        if patient_id and not any(f.repeats for f in found):
            hit = _as_patient_id(hit, df[col])
        found.append(hit)
    return found
