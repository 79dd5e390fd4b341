"""Whether a quarantine selects patients: a quarantine that takes many rows, or takes them from one category or one
range of a column (every LDH of 1,000 and above, all of one site), trains the model on a biased table however
clean each row is. Counts only: groups are named by column and category or rank (the highest tenth), never a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binom

from medflow.data.split_values import without_value

TENTHS = 10
# A group's excess must be this improbable under the table's own quarantine rate, across every group tested, before
# it counts as concentrated: scattered bad rows never stop a run.
ALPHA = 1e-3


def _rank_name(k: int, bins: int) -> str:
    unit = "tenth" if bins == TENTHS else "range"  # tied tenths (many equal values) merge into fewer ranges
    return {0: f"lowest {unit}", bins - 1: f"highest {unit}"}.get(k, f"{unit} {k + 1} of {bins} from the lowest")


@dataclass
class Groups:
    """Rows and quarantined rows per group, summed over the frames of a table (one, or a streamed table's chunks).
    Numeric columns are cut at edges decided once (tenths of the table or of its sample), so chunks agree."""

    edges: dict[str, np.ndarray]
    categorical: list[str]
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # split.by's (column, by): its rows the split cannot place are all quarantined by rule (split_value_checks), so
    # they form no group of their own; the other columns' groups still see them.
    unplaced: tuple[str, str] | None = None

    @classmethod
    def of(
        cls, numbers: dict[str, np.ndarray], categorical: list[str], unplaced: tuple[str, str] | None = None
    ) -> Groups:
        """numbers: each numeric column's values (NaN where missing or unreadable) to take the tenths of."""
        edges = {}
        for col, x in numbers.items():
            finite = x[np.isfinite(x)]
            if finite.size:
                edges[col] = np.unique(np.quantile(finite, np.linspace(0, 1, TENTHS + 1)[1:-1]))
        return cls(edges, categorical, unplaced=unplaced)

    def add(self, numbers: dict[str, np.ndarray], categories: pd.DataFrame, held: np.ndarray) -> None:
        """One frame: numbers and categories of its rows (categories: the categorical columns as text), held: which
        of them the quarantine takes."""
        for col, inner in self.edges.items():
            x = numbers[col]
            known = np.isfinite(x)
            rank = np.searchsorted(inner, x[known], side="right")
            bins = len(inner) + 1
            self._count(col, rank, held[known], lambda k, bins=bins: _rank_name(k, bins))
        for col in self.categorical:
            text = categories[col].astype("string")
            if self.unplaced is not None and col == self.unplaced[0]:
                grouped = ~without_value(categories[col], self.unplaced[1])
            else:
                grouped = np.ones(len(text), dtype=bool)
            values = text.fillna("<missing>").str.strip().to_numpy(dtype=object)
            self._count(col, values[grouped], held[grouped], lambda v: repr(v))

    def _count(self, col: str, keys: np.ndarray, held: np.ndarray, name) -> None:
        frame = pd.DataFrame({"k": keys, "h": held.astype("int64")})
        for key, (n, q) in frame.groupby("k", sort=False)["h"].agg(["size", "sum"]).iterrows():
            c = self.counts.setdefault((col, name(key)), [0, 0])
            c[0] += int(n)
            c[1] += int(q)


def concentrated(groups: Groups, rows: int, held: int, limit: float, small: int) -> list[str]:
    """Groups the quarantine takes more than `limit` of, improbably more than the table's own rate: each as
    "<column> <group>: q of n rows". Groups of fewer than `small` quarantined rows are never named."""
    if not held or held == rows:
        return []
    rate = held / rows
    tested = [(key, n, q) for key, (n, q) in groups.counts.items() if q >= small and q > limit * n]
    found = []
    for (col, name), n, q in tested:
        if binom.sf(q - 1, n, rate) < ALPHA / max(len(groups.counts), 1):
            found.append((q / n, f"{col!r} {name}: {q} of {n} rows"))
    return [text for _, text in sorted(found, reverse=True)]
