"""From events to tensors: a regular grid of each stay's observation window, its normalisation fitted on the
training split, and the window aggregates the baselines read.

A grid, not the irregular events: the GRU, LSTM and Transformer then all read one [stays, bins, channels] tensor
that batches as a table's rows do (the loop, AMP, checkpoints and DDP unchanged), and the mask and
time-since-last-observation channels keep what irregular sampling says (which variable was measured, how long ago)
as the MIMIC-III benchmarks do. A Transformer with a time encoding over raw events would keep exact times, at the
price of ragged batches and a padding scheme of its own; at 1-hour bins little is lost for vitals and labs.

Stays are gridded and transformed in chunks (data.events.chunk_stays), so temporaries scale with a chunk, and the
grid itself is float32 [stays, bins, variables] (10,000 stays x 48 bins x 5 variables: 9.6 MB).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

AGGREGATES = ("last", "min", "max", "mean", "count")


def n_bins(window_hours: float, bin_hours: float) -> int:
    return max(1, math.ceil(window_hours / bin_hours - 1e-9))


def build(
    stay: np.ndarray,
    hour: np.ndarray,
    variable: np.ndarray,
    value: np.ndarray,
    n_stays: int,
    n_vars: int,
    window_hours: float,
    bin_hours: float,
    chunk: int,
) -> np.ndarray:
    """[n_stays, bins, n_vars] float32: each bin's last value in time, NaN where nothing was charted. hour: hours
    since the window opened (0..window_hours); a value at the prediction time itself falls in the last bin."""
    bins = n_bins(window_hours, bin_hours)
    grid = np.full((n_stays, bins, n_vars), np.nan, dtype=np.float32)
    order = np.lexsort((hour, stay))  # by stay, then time: the last write to a cell is its latest value
    stay, hour, variable, value = stay[order], hour[order], variable[order], value[order]
    edges = np.searchsorted(stay, np.arange(0, n_stays + chunk, chunk))
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        if lo == hi:
            continue
        b = np.minimum((hour[lo:hi] / bin_hours).astype("int64"), bins - 1)
        part = grid[i * chunk : (i + 1) * chunk]
        flat = ((stay[lo:hi] - i * chunk) * bins + b) * n_vars + variable[lo:hi]
        # The last occurrence of each cell: unique over the reversed order picks it.
        cells, last = np.unique(flat[::-1], return_index=True)
        part.reshape(-1)[cells] = value[lo:hi][::-1][last]
    return grid


def aggregates(
    stay: np.ndarray, hour: np.ndarray, variable: np.ndarray, value: np.ndarray, n_stays: int, variables: list[str]
) -> pd.DataFrame:
    """Per stay and variable over the window: last, min, max, mean (NaN when never charted) and count, columns
    named <variable>_<aggregate>; computed from the events themselves, not the grid."""
    frame = pd.DataFrame({"s": stay, "v": variable, "h": hour, "x": value}).sort_values(["s", "v", "h"])
    g = frame.groupby(["s", "v"])["x"]
    stats = pd.DataFrame({"last": g.last(), "min": g.min(), "max": g.max(), "mean": g.mean(), "count": g.size()})
    wide = stats.unstack("v").reindex(range(n_stays))
    out = {}
    for i, name in enumerate(variables):
        for agg in AGGREGATES:
            col = wide[(agg, i)] if (agg, i) in wide.columns else pd.Series(np.nan, index=wide.index)
            out[f"{name}_{agg}"] = col.fillna(0.0).to_numpy() if agg == "count" else col.to_numpy(dtype="float64")
    return pd.DataFrame(out)


@dataclass
class SequenceNormaliser:
    """Per-variable mean and SD of the training split's charted values, and the grid's geometry. transform gives
    [stays, bins, 3 x variables] float32: the standardised value carried forward (0, the training mean, before the
    first value), the mask (1 where charted in the bin) and the hours since the last value over the window (1 before
    the first)."""

    variables: list[str]
    window_hours: float
    bin_hours: float
    horizon_hours: float
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    # data.events (or data.signals) and data.patient_id as the model was trained: predict reads and checks new
    # input the same way.
    settings: dict = field(default_factory=dict)
    patient_id: str | None = None
    # Signals: one channel per lead, standardised (no gaps to carry forward, nothing to mask).
    signal: bool = False

    def fit(self, grid: np.ndarray) -> SequenceNormaliser:
        flat = grid.reshape(-1, grid.shape[-1])
        seen = ~np.isnan(flat)
        count = seen.sum(0)
        total = np.where(seen, flat, 0.0).astype("float64")
        mean = total.sum(0) / np.maximum(count, 1)
        var = (np.where(seen, flat - mean, 0.0) ** 2).sum(0) / np.maximum(count, 1)
        self.means = mean.tolist()
        self.stds = [float(s) if s > 0 else 1.0 for s in np.sqrt(var)]
        return self

    @property
    def channels(self) -> int:
        return len(self.variables) if self.signal else 3 * len(self.variables)

    def transform(self, grid: np.ndarray, chunk: int = 2000) -> np.ndarray:
        n, bins, v = grid.shape
        if v != len(self.variables):
            raise ValueError(f"a grid of {v} variables given; this model reads {len(self.variables)}")
        mean, std = np.asarray(self.means, np.float32), np.asarray(self.stds, np.float32)
        if self.signal:
            return np.nan_to_num((np.asarray(grid, dtype=np.float32) - mean) / std)
        out = np.empty((n, bins, 3 * v), dtype=np.float32)
        step = np.arange(bins, dtype=np.float32)[None, :, None]
        for lo in range(0, n, chunk):
            g = np.asarray(grid[lo : lo + chunk], dtype=np.float32)
            seen = ~np.isnan(g)
            # Forward fill: the index of the last charted bin at or before each bin (-1 before the first).
            last = np.maximum.accumulate(np.where(seen, step, -1), axis=1).astype("int64")
            filled = np.take_along_axis(np.where(seen, g, 0.0), np.maximum(last, 0), axis=1)
            z = np.where(last >= 0, (filled - mean) / std, 0.0)
            since = np.where(last >= 0, (step - last) * self.bin_hours / self.window_hours, 1.0)
            out[lo : lo + chunk] = np.concatenate([z, seen, np.minimum(since, 1.0)], axis=2)
        return out

    def to_dict(self) -> dict:
        return {"kind": "events", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> SequenceNormaliser:
        return cls(**{k: v for k, v in d.items() if k != "kind"})
