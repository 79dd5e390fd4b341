"""How a table writes its numbers, and the one parser that reads them.

validate decides, per column, the way numbers are written for people ("1,262", "3,5", "12%", "12 mg"); the decision
travels with the model (Schema.formats), so training, `medflow predict`, the pyfunc, `mlflow models serve` and
`monitor` read every value of a column with the same parser, and a value training read is never refused in scoring.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from medflow.data.sources import NA_VALUES

# The words the table reader takes for "no value", compared lower-cased: a batch from JSON or a DataFrame never
# went through that reader.
MISSING_LOWER = frozenset(w.lower() for w in NA_VALUES)

# ASCII digits, as the number parser reads them: with \d, GX's regex took "٣" (an Arabic-Indic 3) for a number
# that no parser reads. Suites inferred before say \d; they are still read as the number check.
NUMBER_REGEX = r"^\s*[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*$"
NUMBER_REGEXES = (NUMBER_REGEX, r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$")
_PLAIN = re.compile(NUMBER_REGEX)
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")
_PERCENT = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+))\s*%$")
_UNIT = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµ°][A-Za-zµ°/0-9^.]*)$")

_HOW = {
    "percent": ("percent signs", "{what} removed from {n} values (numbers are percentages)"),
    "unit": (None, "{what} removed from {n} values"),
    "decimal": ("decimal commas", "{what} read as points in {n} values"),
    "thousands": ("thousands separators", "{what} removed from {n} values"),
}


@dataclass(frozen=True)
class NumberFormat:
    """The way a column writes its numbers besides plain ones; what the model records and scoring reads."""

    reading: str = "plain"  # plain | percent | unit | decimal | thousands
    unit: str | None = None  # lower-cased, for the reading "unit": "12 mg" and "12 MG" are one unit

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> NumberFormat:
        return cls(**d) if d else PLAIN


PLAIN = NumberFormat()


@dataclass(frozen=True)
class Conversion:
    """How a column of numbers written as text was read, and in how many values."""

    reading: str  # "percent", "unit", "decimal" or "thousands"
    what: str  # the way of writing numbers, for people: "decimal commas", "unit 'mg'", ...
    how: str  # what was done, with {what} and {n} to fill in
    n: int
    unit: str | None = None

    @property
    def format(self) -> NumberFormat:
        return NumberFormat(self.reading, self.unit)

    def __str__(self) -> str:
        return self.how.replace("{what}", self.what).replace("{n}", str(self.n))


def conversion(fmt: NumberFormat, what: str | None, n: int) -> Conversion:
    """What was done to n values of a column read as fmt; what: how people call the way of writing (default by
    reading; a unit is named as written)."""
    return Conversion(fmt.reading, what or _HOW[fmt.reading][0], _HOW[fmt.reading][1], n, fmt.unit)


def plain_numbers(col: pd.Series) -> pd.Series:
    """Plain numbers as floats; other text is NaN. Infinities ("inf", "-Infinity", overflow such as "1e500") stay
    infinite: a column exported with them is still numbers, and the magnitude check quarantines each such row."""
    return pd.to_numeric(col, errors="coerce").astype("float64")


def written_as_number(values: pd.Series, x: pd.Series) -> pd.Series:
    """Which values NUMBER_REGEX accepts, from plain_numbers' x: parsed, and not an infinity spelt as a word ("inf"
    parses, as it must for the magnitude check, but is no number written with digits)."""
    ok = x.notna()
    infinite = np.isinf(x.to_numpy())
    if infinite.any():
        ok[infinite] = ~values[infinite].astype("string").str.contains("[a-df-zA-DF-Z]", regex=True).to_numpy()
    return ok


def readings(text: pd.Series) -> dict[str, pd.Series]:
    """Which values (stripped text) are plain numbers and which are written each other way."""
    unit = text.str.extract(_UNIT)
    return {"plain": text.str.match(_PLAIN), "grouped": text.str.match(_THOUSANDS),
            "decimal": text.str.match(_DECIMAL_COMMA), "percent": text.str.extract(_PERCENT)[0],
            "unit": unit[0], "unit_name": unit[1]}  # fmt: skip


def hits(r: dict[str, pd.Series], fmt: NumberFormat) -> pd.Series:
    """Which values are written the way of fmt (a unit only when it is fmt's unit)."""
    if fmt.reading == "unit":
        return r["unit"].notna() & r["unit_name"].str.lower().eq(fmt.unit).fillna(False)
    return {"percent": r["percent"].notna(), "decimal": r["decimal"], "thousands": r["grouped"]}[fmt.reading]


def rewrite(values: pd.Series, text: pd.Series, r: dict[str, pd.Series], fmt: NumberFormat) -> tuple[pd.Series, int]:
    """values with those written the way of fmt rewritten as plain numbers (text: their stripped text, indexed as
    values), and how many were."""
    hit = hits(r, fmt)
    out = values.astype(object).copy()
    if fmt.reading in ("percent", "unit"):
        new = r[fmt.reading][hit]
    else:
        new = text[hit].str.replace(",", "." if fmt.reading == "decimal" else "", regex=False)
    out[text.index[hit]] = new.to_numpy()
    return out, int(hit.sum())


def parse(values: pd.Series, fmt: NumberFormat = PLAIN) -> pd.Series:
    """The one parser of a numeric column: plain numbers and those written the way of fmt as floats; missing words
    and any other text are NaN (scoring refuses such text, see `unreadable`)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64")
    x = plain_numbers(values)
    if fmt.reading == "plain":
        return x
    # Only the values plain parsing missed are looked at again: most of a column is plain numbers.
    rest = values[x.isna() & values.notna()]
    if len(rest):
        text = rest.astype(str).str.strip()
        rewritten, n = rewrite(rest, text, readings(text), fmt)
        if n:
            x[rest.index] = plain_numbers(rewritten).to_numpy()
    return x


def unreadable(values: pd.Series, number: pd.Series) -> np.ndarray:
    """Which values hold text that is neither a missing word nor a number parse read (number: parse's result)."""
    text = values.astype(str).str.strip().str.lower()
    given = values.notna() & ~text.isin(MISSING_LOWER)
    return (given & number.isna()).to_numpy()


class Parsed(dict):
    """plain_numbers() of each column of one frame, computed on first use: a 2,000-column table is parsed once per
    column, not once per check."""

    def __init__(self, df: pd.DataFrame):
        super().__init__()
        self.df = df
        self.counts: dict[str, int] = {}
        self.present = df.notna().sum()

    def __missing__(self, col: str) -> pd.Series:
        self[col] = plain_numbers(self.df[col])
        self.counts[col] = int(np.count_nonzero(~np.isnan(self[col].to_numpy())))
        return self[col]

    def count(self, col: str) -> int:
        """Values of col that parse as numbers."""
        if col not in self.counts:
            self[col]  # noqa: B018 - parses and counts
        return self.counts[col]

    def matrix(self, cols: list[str], index: pd.Index) -> np.ndarray:
        """The parsed columns as one float matrix, rows of index (labels of self.df)."""
        if not cols:
            return np.empty((len(index), 0))
        rows = self.df.index.get_indexer(index)
        return np.column_stack([self[c].to_numpy() for c in cols])[rows]

    def rebase(self, df: pd.DataFrame, changed: list[str]) -> None:
        self.df = df
        self.present = df.notna().sum()
        for col in changed:
            self.pop(col, None)
            self.counts.pop(col, None)


def typed(df: pd.DataFrame, kinds: dict[str, str], parsed: Parsed | None = None) -> pd.DataFrame:
    """df (or some of its rows) with numeric columns as floats."""
    cache = Parsed(df) if parsed is None else parsed
    cols = [col for col, kind in kinds.items() if kind == "numeric" and col in df]
    # One concat, not a column assignment per column: 2,000 assignments fragment the frame.
    parsed = pd.DataFrame(cache.matrix(cols, df.index), index=df.index, columns=cols)
    return pd.concat([df.drop(columns=cols), parsed], axis=1)[list(df.columns)]
