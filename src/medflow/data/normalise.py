"""Numbers written for people ("265,000", "12%", "12 mg", "3,5") rewritten as plain numbers before any check, in
memory (the source is never touched): each column's reading decided on the table (or a streamed table's sample) and
applied to every chunk after it. The reading travels with the model (Schema.formats; numbers.py parses by it).
"""

from __future__ import annotations

import pandas as pd

from medflow.data.columns import ROW_ID
from medflow.data.numbers import Conversion, NumberFormat, Parsed, conversion, readings, rewrite
from medflow.data.suite import ValidationFailed, roles
from medflow.params import DataParams, ValidateParams


def _as_number(
    values: pd.Series, plain: pd.Series, column: str, source: str, vp: ValidateParams
) -> tuple[pd.Series, Conversion] | None:
    """Numbers written for people ("265,000", "12%", "12 mg", "3,5") as plain numbers, with what was done; None
    when the column is not mostly numbers. plain: the values as plain numbers. Fails when no single reading fits
    (mixed units, a comma that is a thousands separator in some values and a decimal comma in others)."""
    # Only what plain parsing missed is read again: a column of plain numbers with a few "1,262" among them is read
    # with both ways, so the values written for people (often the highest) are not quarantined as text.
    rest = values[plain.isna() & values.notna()]
    text = rest.astype(str).str.strip()
    # Category codes ("low", "F") hold no digit: one look at the distinct values settles it.
    if not len(text) or not any(any(ch.isdigit() for ch in v) for v in text.unique()):
        return None
    r = readings(text)
    percent, unit, comma = r["percent"].notna(), r["unit"].notna(), r["grouped"] | r["decimal"]
    formatted = comma | percent | unit
    n, given = int(formatted.sum()), int(values.notna().sum())
    if not n or int(plain.notna().sum()) + n < vp.type_mostly * given:
        return None
    # "1,234" reads both ways; "1,234,567" and "1,234.5" only as thousands, "3,5" and "1234,56" only as decimals.
    only_grouped = int((r["grouped"] & ~r["decimal"]).sum())
    only_decimal = int((r["decimal"] & ~r["grouped"]).sum())
    units = r["unit_name"].dropna().str.lower()
    stop = None
    # Counted as ints: numpy's True + True is True, and would let a column mixing two formats through.
    if sum(bool(f.any()) for f in (percent, unit, comma)) > 1:
        stop = "mixes number formats (separators, percent signs, units)"
    elif unit.any() and units.nunique() > 1:
        stop = f"has {units.nunique()} different units (rule: one unit per column)"
    elif only_grouped and only_decimal:
        stop = f"uses a comma as thousands separator in {only_grouped} and as decimal comma in {only_decimal} values"
    if stop:
        raise ValidationFailed(
            f"{source}: column {column!r} {stop}: {n} of {given} values are numbers written as text; convert "
            "them to plain numbers in the source or list the column in data.exclude"
        )
    reading = "percent" if percent.any() else "unit" if unit.any() else "decimal" if only_decimal else "thousands"
    fmt = NumberFormat(reading, units.iloc[0] if reading == "unit" else None)
    out, done = rewrite(values, text, r, fmt)
    what = f"unit {r['unit_name'].dropna().iloc[0]!r}" if reading == "unit" else None
    return out, conversion(fmt, what, done)


def normalise_numbers(
    df: pd.DataFrame, data: DataParams, vp: ValidateParams, source: str, parsed: Parsed
) -> tuple[pd.DataFrame, dict[str, Conversion]]:
    """df with text-coded number columns rewritten as plain numbers (in memory: the source is never touched);
    parsed follows the new frame."""
    role = roles(data)
    out, done = df, {}
    for col in df.columns:
        # A regression target is read as a number is: "151 mg/dL" and "1,262" become plain numbers too.
        if (col in role and not (col == data.target and data.task == "regression")) or col == ROW_ID:
            continue
        n = parsed.present[col]
        if not n or parsed.count(col) == n:
            continue
        converted = _as_number(df[col], parsed[col], col, source, vp)
        if converted is not None:
            out = out.copy() if out is df else out
            out[col], done[col] = converted
    parsed.rebase(out, list(done))
    return out, done


def convert(
    df: pd.DataFrame, formats: dict[str, Conversion], vp: ValidateParams, source: str, parsed: Parsed
) -> tuple[pd.DataFrame, dict[str, int]]:
    """normalise_numbers for one chunk of a table whose formats were decided on a sample: each column read the
    sample's way, with how many values were rewritten here. Fails, as normalise_numbers does on a whole table, when
    the chunk writes some of a column's numbers another way (another unit, percent signs beside decimal commas)."""
    out, counts = df, {}
    for col, fmt in formats.items():
        text = df[col].dropna().astype(str).str.strip()
        r = readings(text)
        other = {
            "percent signs": int(r["percent"].notna().sum()) if fmt.reading != "percent" else 0,
            "units": int(r["unit"].notna().sum()) if fmt.reading != "unit" else 0,
            "commas": int((r["grouped"] | r["decimal"]).sum()) if fmt.reading not in ("decimal", "thousands") else 0,
            "another unit": int((r["unit_name"].dropna().str.lower() != fmt.unit).sum()) if fmt.unit else 0,
            "thousands separators": int((r["grouped"] & ~r["decimal"]).sum()) if fmt.reading == "decimal" else 0,
            "decimal commas": int((r["decimal"] & ~r["grouped"]).sum()) if fmt.reading == "thousands" else 0,
        }
        clash = next(((k, v) for k, v in other.items() if v), None)
        if clash:
            raise ValidationFailed(
                f"{source}: column {col!r} mixes number formats: {clash[1]} values in data rows {df.index[0] + 1}-"
                f"{df.index[-1] + 1} are written with {clash[0]}, the table's sample with {fmt.what}; convert them to "
                "plain numbers in the source or list the column in data.exclude"
            )
        out = out.copy() if out is df else out
        out[col], counts[col] = rewrite(df[col], text, r, fmt.format)
    parsed.rebase(out, list(counts))
    return out, counts
