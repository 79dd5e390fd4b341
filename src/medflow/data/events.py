"""A survival table's event column read as flags, the same in validate (which refuses what it cannot read), clean
and scoring: 1/0 (true/false), or the table's own words with event_value the word meaning an event."""

from __future__ import annotations

import pandas as pd

WORDS = {"1": True, "0": False, "1.0": True, "0.0": False, "true": True, "false": False}


def event_flags(values: pd.Series, event_value: str | int | None) -> pd.Series:
    """True (event), False (censored) or NA (missing, or neither) per row; case and spaces aside."""
    text = values.astype("string").str.strip().str.casefold()
    if event_value is not None:
        return (text == str(event_value).strip().casefold()).where(text.notna()).astype("boolean")
    return text.map(WORDS).astype("boolean")
