"""The study's data: train and validation rows only, selected before anything is read.

The manifest says which row ids are train or val; the cleaned table is read with those ids as a Parquet filter and
images.npy (memory-mapped) at those rows' positions only, so no test row ever reaches a DataFrame or a tensor of a
trial. The preprocessing is fitted on the training split, as the train step fits it. Segmentation's cases stay on
disk: a trial memory-maps the train and val cases by row id, as the train step does, and never opens a test case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from medflow.data import manifest
from medflow.data.columns import ROW_ID, SPLIT
from medflow.data.features import ImageNormaliser, Preprocessor, Schema
from medflow.paths import Paths
from medflow.segmentation.train import split_rows
from medflow.sequences.steps import grid_of, normaliser
from medflow.tasks import of

SPLITS = ("train", "val")


@dataclass
class TrialData:
    x: dict[str, torch.Tensor]  # split -> float [N, F] rows, uint8 [N, H, W, C] images or float [N, bins, C] grids
    y: dict[str, torch.Tensor]
    preprocessor: Preprocessor | ImageNormaliser
    schema: Schema
    scale: dict | None = None  # a regression target's {"mean", "std"} on the train split (tasks/regression.py)

    @property
    def rows(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.y.items()}


@dataclass
class CaseData:
    paths: Paths  # where the cached cases are (segmentation.cases.load_case)
    dims: int  # 2 or 3, as validate found the cases
    ids: dict[str, list[int]]  # split -> row ids of its cases

    @property
    def rows(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.ids.items()}


def _require(path, step: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `medflow step {step}` (medflow tune runs it when stale)")


def read_train_val(paths: Paths) -> tuple[pd.DataFrame, np.ndarray, Schema]:
    """Cleaned rows of the train and val splits (with `_split`), their positions in the cleaned table, the schema."""
    for path, step in ((paths.cleaned, "clean"), (paths.schema, "clean"), (paths.manifest, "split")):
        _require(path, step)
    listed = pd.read_csv(paths.manifest, usecols=["row_id", "split"])
    keep = listed[listed["split"].isin(SPLITS)]
    ids = keep["row_id"].astype("int64").tolist()
    df = pq.read_table(paths.cleaned, filters=[(ROW_ID, "in", ids)]).to_pandas()
    if len(df) != len(ids):
        raise ValueError(
            f"{paths.cleaned}: {len(ids) - len(df)} train/val row(s) of {paths.manifest} are missing; rerun split"
        )
    # Row ids alone (no values) locate each kept row in images.npy, whose row i is the cleaned table's row i.
    all_ids = pq.read_table(paths.cleaned, columns=[ROW_ID]).column(ROW_ID).to_numpy()
    positions = pd.Index(all_ids).get_indexer(df[ROW_ID])
    by_position = np.argsort(positions)  # the table's order, as the train step reads it
    df = df.iloc[by_position].reset_index(drop=True)
    split = manifest.lookup(paths, "split", df[ROW_ID])
    return df.assign(**{SPLIT: split.to_numpy()}), positions[by_position], Schema.load(paths.schema)


def trial_data(paths: Paths, small_count: int) -> TrialData:
    df, positions, schema = read_train_val(paths)
    masks = {s: (df[SPLIT] == s).to_numpy() for s in SPLITS}
    for s, m in masks.items():
        if not m.any():
            raise ValueError(f"{paths.manifest}: the {s} split is empty; enlarge the data or split.{s}")
    y, scale = of(schema).learning_targets({s: manifest.outcome(df[m]) for s, m in masks.items()})
    if schema.kind == "image":
        images = np.load(paths.images, mmap_mode="r")
        x = {s: torch.from_numpy(np.ascontiguousarray(images[positions[m]])) for s, m in masks.items()}
        pre = ImageNormaliser.fit(x["train"].numpy())
    elif schema.kind in ("events", "signals"):
        pre = normaliser(paths, positions[masks["train"]])
        raw = grid_of(paths)
        x = {s: torch.from_numpy(pre.transform(raw[positions[m]])) for s, m in masks.items()}
    else:
        pre = Preprocessor(schema.numeric, schema.categorical, small_count=small_count).fit(df[masks["train"]])
        x = {s: torch.from_numpy(pre.transform(df[m])) for s, m in masks.items()}
    return TrialData(x, y, pre, schema, scale)


def case_data(paths: Paths) -> CaseData:
    for path, step in ((paths.summary("validate"), "validate"), (paths.manifest, "split")):
        _require(path, step)
    ids = {s: split_rows(paths, s) for s in SPLITS}
    for s, rows in ids.items():
        if not rows:
            raise ValueError(f"{paths.manifest}: the {s} split is empty; enlarge the data or split.{s}")
    return CaseData(paths, json.loads(paths.summary("validate").read_text())["dims"], ids)
