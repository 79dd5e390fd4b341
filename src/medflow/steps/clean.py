"""clean: reads artifacts/validate/{valid.parquet,columns.json} (+ images.npy for images); writes artifacts/clean/
(cleaned.parquet, schema.json, quarantine.csv, summary.json, images.npy for images). Fails when the patient id
needs a salt and none is set, or no feature column is left.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd

from medflow.data.columns import CONTENT_HASH, LABEL, PATIENT_KEY, ROW_ID, TIME, TIME_OR_SITE
from medflow.data.features import Schema, coerce_features, encode_labels
from medflow.data.image_store import copy_rows, return_freed_memory
from medflow.data.split_values import split_values, without_value
from medflow.params import DataParams, Params
from medflow.paths import Paths
from medflow.privacy.keys import pseudonymise, resolve_salt
from medflow.privacy.phi import undeclared_identifiers
from medflow.sequences.steps import keep_grid
from medflow.tasks import for_params

log = logging.getLogger(__name__)

DECLARED = ("identifier", "patient_id")  # kinds params.data gives: the user knows these are no features


class CleanError(ValueError):
    pass


def label_classes(labels: pd.Series, data: DataParams) -> list[str]:
    values = labels.dropna().astype(str).str.strip()
    if data.positive_class is not None:
        pos = data.positive_label(sorted(set(values)))
        if pos is None:
            raise CleanError(
                f"data.positive_class={data.positive_class!r} never occurs in target column {data.target!r} "
                f"(values: {sorted(set(values))[:10]})"
            )
        return [f"not_{pos}", pos]
    classes = sorted(set(values))
    if len(classes) < 2:
        raise CleanError(f"target column {data.target!r} has {len(classes)} distinct value(s); need 2 or more")
    return classes


def build_image_schema(kinds: dict[str, str], data: DataParams, labels: pd.Series, shape: list[int]) -> Schema:
    dropped = {c: "not used by image models" for c, k in kinds.items() if k not in ("target", "patient_id")}
    classes = label_classes(labels, data)
    return Schema(
        target=data.target,
        classes=classes,
        numeric=[],
        categorical=[],
        patient_id=data.patient_id,
        positive_class=None if data.positive_class is None else classes[1],
        dropped=dropped,
        kind="image",
        image_shape=list(shape),
    )


def build_schema(
    kinds: dict[str, str],
    data: DataParams,
    labels: pd.Series,
    formats: dict[str, dict] | None = None,
    text_why: dict[str, str] | None = None,
    has_classes: bool = True,
    split_by: str | None = None,
) -> Schema:
    """text_why: validate's reason why each text column is one (columns.not_features of its summary); has_classes:
    whether data.task's target is a class (medflow.tasks); split_by: the column split.by=time or site splits on,
    which is never a feature (a model must not learn the era or the hospital it is tested on)."""
    dropped: dict[str, str] = {}
    for col, kind in kinds.items():
        if kind == "identifier":
            dropped[col] = "declared identifier"
        elif kind == "text":
            dropped[col] = (text_why or {}).get(col, "free text or dates") + ": not used as a feature"
        elif col == data.time and data.task == "survival":
            dropped[col] = "data.time: the follow-up time, half of the outcome"
        elif col == split_by:
            dropped[col] = "split.by: the column the split holds out by, never a feature"
    candidates = [c for c, k in kinds.items() if k in ("numeric", "categorical") and c not in dropped]
    for col in undeclared_identifiers(candidates, data.identifiers, [data.target, data.patient_id or ""]):
        dropped[col] = "named like an identifier: declare it in data.identifiers"
        log.warning("column %r looks like an identifier and is not used as a feature", col)
    numeric = [c for c in candidates if kinds[c] == "numeric" and c not in dropped]
    categorical = [c for c in candidates if kinds[c] == "categorical" and c not in dropped]
    if not numeric + categorical:
        raise CleanError(f"no feature column left after dropping identifiers and text columns: {dropped}")
    classes = label_classes(labels, data) if has_classes else []
    return Schema(
        target=data.target,
        classes=classes,
        numeric=numeric,
        categorical=categorical,
        patient_id=data.patient_id,
        positive_class=None if data.positive_class is None else classes[1],
        dropped=dropped,
        formats={c: f for c, f in (formats or {}).items() if c in numeric},
        outcome=data.task,
        **({"time": data.time, "event_value": _text(data.event_value)} if data.task == "survival" else {}),
    )


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def split_duplicates(df: pd.DataFrame, cols: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exact repeats of a row (on cols; default every column but the row id) go to quarantine, naming the row
    they repeat."""
    cols = cols or [c for c in df.columns if c != ROW_ID]
    first = df.groupby(cols, dropna=False, sort=False)[ROW_ID].transform("min")
    dup = df[ROW_ID] != first
    quarantined = df[dup].copy()
    quarantined.insert(1, "reason", [f"duplicate: exact repeat of row {r}" for r in first[dup]])
    return df[~dup], quarantined


def without_split_value(kept: pd.DataFrame, held: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """split.by=time or site: a row with no value in its column can be neither held out nor trained on as another
    site's or era's (it may be the held-out one's). validate quarantines such rows of a table with its own
    (data.checks.split_value_checks); image sets, event and signal tables are validated without a suite, so here
    such a row joins clean's quarantine with its reason, and more than validate.max_quarantine of them stops clean."""
    sp = params.split
    if sp.column is None or sp.column not in kept:
        return kept, held
    # Before anything is written: a time column of both numbers and dates stops here, in one line.
    split_values(kept[sp.column], sp.by)
    missing = without_value(kept[sp.column], sp.by)
    share = missing.sum() / max(len(kept), 1)
    if share > params.validate_.max_quarantine:
        raise CleanError(
            f"column {sp.column!r}, rule: split.by={sp.by} needs a value on every row; {int(missing.sum())} of "
            f"{len(kept)} rows have none, more than validate.max_quarantine={params.validate_.max_quarantine:g}"
        )
    unsplit = kept[missing].copy()
    unsplit.insert(1, "reason", f"{sp.column}: missing (split.by={sp.by} needs a value on every row)")
    return kept[~missing], pd.concat([held, unsplit])


def clean_table(
    df: pd.DataFrame, schema: Schema, salt: str | None, split_by: tuple[str, str] | None = None
) -> pd.DataFrame:
    out = coerce_features(df, schema)
    if schema.kind == "image":
        out[CONTENT_HASH] = df[CONTENT_HASH].to_numpy()
    out.insert(0, ROW_ID, df[ROW_ID].astype("int64").to_numpy())
    if PATIENT_KEY in df:
        out.insert(1, PATIENT_KEY, df[PATIENT_KEY].to_numpy())
    elif schema.patient_id:
        # Image manifests reach clean with the patient id; tables arrive already keyed by validate.
        out.insert(1, PATIENT_KEY, pseudonymise(df[schema.patient_id], salt or ""))
    out[LABEL] = encode_labels(df[schema.target], schema)
    if schema.time:
        out[TIME] = pd.to_numeric(df[schema.time]).to_numpy(dtype="float64")
    if split_by:
        out[TIME_OR_SITE] = split_values(df[split_by[0]], split_by[1])
    return out.reset_index(drop=True)


def run(params: Params, paths: Paths) -> dict:
    task = for_params(params)
    if task.name == "segmentation":
        from medflow.segmentation import cases

        return cases.clean(params, paths)
    kinds = json.loads((paths.step_dir("validate") / "columns.json").read_text())
    df = pd.read_parquet(paths.valid_rows)
    salt = None if PATIENT_KEY in df else resolve_salt(params)
    out = paths.step_dir("clean")
    out.mkdir(parents=True, exist_ok=True)
    by = params.split.column
    if params.data.kind == "image":
        images = paths.step_dir("validate") / "images.npy"
        shape = json.loads(paths.summary("validate").read_text())["image_shape"]
        schema = build_image_schema(kinds, params.data, df[params.data.target], shape)
        # The same picture with the same label is one example, whoever it was filed under.
        kept, duplicates = without_split_value(*split_duplicates(df, [CONTENT_HASH, params.data.target]), params)
        rows, budget = kept.index.to_numpy(), params.train.memory_budget_mb
        if budget is None:
            np.save(paths.images, np.ascontiguousarray(np.load(images, mmap_mode="r")[rows]))
        else:
            return_freed_memory()
            copy_rows(images, rows, paths.images, budget)
    else:
        formats = json.loads(paths.number_formats.read_text()) if paths.number_formats.exists() else {}
        validated = json.loads(paths.summary("validate").read_text()) if paths.summary("validate").exists() else {}
        text_why = validated.get("columns", {}).get("not_features")
        if by is not None and by not in df:
            raise CleanError(
                f"{paths.valid_rows}: column {by!r} named by split.{params.split.by}_column is not in the table "
                "(rule: split.by needs it; data.exclude drops a column before it is read)"
            )
        schema = build_schema(kinds, params.data, df[params.data.target], formats, text_why, task.has_classes, by)
        kept, duplicates = without_split_value(*split_duplicates(df), params)
        if params.data.kind in ("events", "signals"):  # features: aggregates; the grid goes on row for row
            schema = dataclasses.replace(schema, kind=params.data.kind)
            keep_grid(paths, kept.index.to_numpy())
    cleaned = clean_table(kept, schema, salt, (by, params.split.by) if by else None)
    cleaned.to_parquet(paths.cleaned, index=False)
    schema.save(paths.schema)
    # The row it repeats holds its values: the row numbers find both, and no text is copied out of the table.
    duplicates[[ROW_ID, "reason"]].to_csv(out / "quarantine.csv", index=False)
    summary = {
        "rows_in": len(df),
        "rows_out": len(cleaned),
        "rows_quarantined": len(duplicates),
        "kind": schema.kind,
        "numeric_features": len(schema.numeric),
        "categorical_features": len(schema.categorical),
        "dropped_columns": sorted(schema.dropped),
        # Columns the table has that the model does not use, without being declared so: said on the terminal.
        "not_features": {c: why for c, why in schema.dropped.items() if kinds.get(c) not in DECLARED},
    }
    if task.has_classes:
        summary |= {
            "classes": schema.classes,
            "class_counts": np.bincount(cleaned[LABEL], minlength=len(schema.classes)).tolist(),
        }
    assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"]
    paths.summary("clean").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
