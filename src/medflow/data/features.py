"""The feature schema and the preprocessing fitted on the training split only.

The same code runs in the `clean`/`train` steps and inside the registered model, so a raw table scored by
the registry goes through exactly the transforms the model was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.columns import CONTENT_HASH
from medflow.data.events import event_flags
from medflow.data.numbers import NumberFormat, parse

MISSING = "<missing>"
# Categories with fewer rows than validate.small_count, pooled under one name wherever categories are stored (suite,
# profile, preprocessor, monitoring reference): a rare value can single out a patient.
OTHER = "<other>"
# Bounds a numeric feature as validate's inferred suite does (data/suite.py, validate.range_margin): robust
# quantiles of the training split widened by twice their span. Scoring refuses a row outside them (a unit slip,
# a misplaced decimal) instead of extrapolating; quantiles, not min/max, so no single patient's value is stored.
RANGE_QUANTILES = (0.005, 0.995)
RANGE_MARGIN = 2.0


@dataclass(frozen=True)
class Schema:
    target: str
    classes: list[str]  # index = label id; for binary, classes[1] is the positive class
    numeric: list[str]
    categorical: list[str]
    patient_id: str | None = None
    positive_class: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    kind: str = "tabular"  # or "image", "events" (a grid per row), "signals" (leads per row)
    image_shape: list[int] | None = None  # [H, W, C] of every image (images are stored uint8, HWC)
    # numeric column -> NumberFormat.to_dict(), how validate read its numbers besides plain ones ("1,262"): scoring
    # reads them the same way. Absent from bundles made before it (plain numbers only).
    formats: dict[str, dict] = field(default_factory=dict)
    # data.task the table was cleaned for (medflow.tasks); bundles made before it are classifiers. A regression
    # schema has no classes and its LABEL holds the target as a float.
    outcome: str = "classification"
    # Survival only: the follow-up time column (cleaned into TIME) and the event's value when the table words it.
    time: str | None = None
    event_value: str | None = None

    @property
    def task(self) -> str:
        if self.outcome != "classification":
            return self.outcome
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    @property
    def identity_columns(self) -> list[str]:
        """Columns whose equality makes two rows the same example (for leakage checks across splits)."""
        return [CONTENT_HASH] if self.kind == "image" else self.features

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Schema:
        return cls(**json.loads(path.read_text()))


def pool_rare(counts: pd.Series, k: int) -> tuple[dict[str, int], int]:
    """({value: rows} of the values of counts (value -> rows) with at least k rows, the rows of all the others)."""
    common = counts >= k
    return {str(v): int(n) for v, n in counts[common].items()}, int(counts[~common].sum())


def encode_labels(labels: pd.Series, schema: Schema) -> np.ndarray:
    if schema.outcome == "survival":
        # validate refused a table with any other event than 1/0 (or the two words, event_value the event's).
        return event_flags(labels, schema.event_value).to_numpy(dtype="int64")
    if schema.outcome == "regression":
        # validate let through only rows whose target reads as a number (its text-coded ones rewritten plain).
        return pd.to_numeric(labels, errors="coerce").to_numpy(dtype="float64")
    values = labels.astype(str).str.strip()
    if schema.positive_class is not None:
        return (values == schema.positive_class).to_numpy().astype("int64")
    index = {c: i for i, c in enumerate(schema.classes)}
    return values.map(index).to_numpy().astype("int64")


def coerce_features(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Raw text columns -> typed feature columns, numbers read as validate read them for training; a column the
    model needs but the table lacks is an error."""
    missing = [c for c in schema.features if c not in df.columns]
    if missing:
        raise KeyError(f"input lacks feature column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for col in schema.numeric:
        out[col] = parse(df[col], NumberFormat.from_dict(schema.formats.get(col)))
    for col in schema.categorical:
        values = df[col].astype(object)
        out[col] = values.where(values.notna(), MISSING).astype(str).str.strip()
    return out


@dataclass
class Preprocessor:
    """Median imputation with missing-value indicators, standardisation, one-hot encoding.

    Fitted on the training split alone so that no statistic of validation or test rows leaks into training.
    Categories with fewer than small_count training rows share one OTHER column, as do values unseen in training at
    scoring time; so the bundle names no rare value.
    """

    numeric: list[str]
    categorical: list[str]
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)  # absent from bundles made before scoring checks
    small_count: int = 1  # 1 in bundles made before rare values were pooled: each value its own column

    def fit(self, df: pd.DataFrame) -> Preprocessor:
        for col in self.numeric:
            x = df[col].to_numpy(dtype="float64")
            med = float(np.nanmedian(x)) if np.isfinite(x).any() else 0.0
            filled = np.where(np.isnan(x), med, x)
            self.medians[col] = med
            self.means[col] = float(filled.mean())
            self.stds[col] = float(filled.std()) or 1.0
            if np.isnan(x).any():
                self.indicators.append(col)
            finite = x[np.isfinite(x)]
            lo, hi = np.quantile(finite, RANGE_QUANTILES).tolist() if finite.size else (0.0, 0.0)
            if hi > lo:  # a constant column has no span to widen: left unbounded
                margin = RANGE_MARGIN * (hi - lo)
                self.ranges[col] = [max(lo - margin, 0.0) if lo >= 0 else lo - margin, hi + margin]
        for col in self.categorical:
            common, rare = pool_rare(df[col].astype(str).value_counts(), self.small_count)
            self.categories[col] = sorted(common) + ([OTHER] if rare else [])
        return self

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric) + [f"{c}__missing" for c in self.indicators]
        for col in self.categorical:
            names += [f"{col}={v}" for v in self.categories[col]]
        return names

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        width = len(self.feature_names)
        if not width:
            raise ValueError("no feature columns to transform")
        # Each block is written into the float32 result in place: stacking float64 blocks and then casting the
        # whole took 1.8 s of 2.3 s for a million rows, and held two more copies of the matrix.
        out = np.empty((len(df), width), dtype="float32")
        j = 0
        if self.numeric:
            x = df[self.numeric].to_numpy(dtype="float64")
            nan = np.isnan(x)
            x = np.where(nan, np.array([self.medians[c] for c in self.numeric]), x)
            x -= np.array([self.means[c] for c in self.numeric])
            x /= np.array([self.stds[c] for c in self.numeric])
            out[:, : len(self.numeric)] = x
            j = len(self.numeric)
            if self.indicators:
                out[:, j : j + len(self.indicators)] = nan[:, [self.numeric.index(c) for c in self.indicators]]
                j += len(self.indicators)
        for col in self.categorical:
            cats = self.categories[col]
            # Values pooled in training, and values unseen there, take the OTHER column; with none pooled in
            # training, an unseen value encodes as all zeros rather than failing at scoring time.
            codes = pd.Categorical(df[col].astype(str), categories=cats).codes
            if cats[-1:] == [OTHER]:
                codes = np.where(codes >= 0, codes, len(cats) - 1)
            onehot = out[:, j : j + len(cats)]
            onehot[:] = 0.0
            known = codes >= 0
            onehot[np.nonzero(known)[0], codes[known]] = 1.0
            j += len(cats)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        return cls(**d)


@dataclass
class ImageNormaliser:
    """Per-channel mean/std of the training split's pixels (0-255 scale); applied on the device in float."""

    mean: list[float]
    std: list[float]
    kind: str = "image"

    @classmethod
    def fit(cls, images: np.ndarray) -> ImageNormaliser:
        """images: uint8 [N, H, W, C] (or StoreRows, read from disk a chunk at a time); sums in float64 chunk by
        chunk of at most 32 MB (a float copy of CIFAR-10 is 1.2 GB)."""
        c = images.shape[-1]
        step = max(1, 2**22 // int(np.prod(images.shape[1:])))
        total, squares, count = np.zeros(c), np.zeros(c), 0
        for i in range(0, len(images), step):
            chunk = np.asarray(images[i : i + step], dtype="float64").reshape(-1, c)
            total += chunk.sum(0)
            squares += (chunk**2).sum(0)
            count += len(chunk)
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 0.0))
        return cls(mean=mean.tolist(), std=(std + 1e-6).tolist())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageNormaliser:
        return cls(**d)
