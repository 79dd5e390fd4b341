"""split: reads artifacts/clean/{cleaned.parquet,schema.json}; writes artifacts/split/ (manifest.csv with
row_id, patient_key, split; summary.json). Fails when a patient or an identical feature row would sit in two
splits.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from medflow.data.columns import LABEL, PATIENT_KEY, ROW_ID, TIME_OR_SITE
from medflow.data.features import Schema
from medflow.params import Params, SplitParams
from medflow.paths import Paths
from medflow.tasks import of

SPLITS = ("train", "val", "test")


class LeakageError(ValueError):
    pass


def feature_hashes(df: pd.DataFrame, features: list[str]) -> pd.Series:
    return pd.util.hash_pandas_object(df[features], index=False).astype("uint64")


def leakage_groups(df: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Rows linked by a shared patient or an identical feature row form one group: the connected components of
    the graph joining each row to its feature hash and its patient key (one sparse pass, no Python call per row)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(df)
    keys = [feature_hashes(df, features).to_numpy()]
    if PATIENT_KEY in df:
        keys.append(df[PATIENT_KEY].to_numpy())
    rows, nodes, offset = [], [], n
    for key in keys:
        codes, uniques = pd.factorize(key, use_na_sentinel=True)
        linked = codes >= 0  # a missing key links nothing
        rows.append(np.flatnonzero(linked))
        nodes.append(codes[linked] + offset)
        offset += len(uniques)
    r, c = np.concatenate(rows), np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(offset, offset))
    return connected_components(graph, directed=False)[1][:n]


def _group_labels(groups: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Group ids, each row's index into them, and each group's majority label (the lowest label on a tie)."""
    ids, inverse = np.unique(groups, return_inverse=True)
    classes, label_codes = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.zeros((len(ids), len(classes)), dtype=np.int64)
    np.add.at(counts, (inverse, label_codes), 1)
    return ids, inverse, pd.Series(classes[counts.argmax(axis=1)], index=ids)


def _stratify(v: np.ndarray, test_size: float):
    counts = np.bincount(v)
    # Stratifying needs every present class in both parts; tiny classes fall back to a plain shuffle.
    return v if (counts[counts > 0] >= 2).all() and min(test_size, 1 - test_size) * len(v) >= len(counts) else None


def assign_splits(groups: np.ndarray, labels: np.ndarray, params: SplitParams, seed: int) -> np.ndarray:
    """Whole groups go to one split; groups are stratified by their majority label (the lowest label on a tie)."""
    ids, inverse, group_label = _group_labels(groups, labels)
    y = group_label.to_numpy()
    rest, test = train_test_split(ids, test_size=params.test, random_state=seed, stratify=_stratify(y, params.test))
    y_rest = group_label.loc[rest].to_numpy()
    val_frac = params.val / (1 - params.test)
    train, val = train_test_split(rest, test_size=val_frac, random_state=seed, stratify=_stratify(y_rest, val_frac))
    where = np.empty(len(ids), dtype=object)
    for name, part in (("train", train), ("val", val), ("test", test)):
        where[np.searchsorted(ids, part)] = name
    return where[inverse]


def _by_time(groups: np.ndarray, when: np.ndarray, params: SplitParams) -> np.ndarray:
    """Whole groups in order of their earliest time: the earliest train, the next val, the latest test (shares of
    groups as split.val and split.test); ties in time keep group order, so the cut is reproducible."""
    ids, inverse = np.unique(groups, return_inverse=True)
    first = pd.Series(when).groupby(inverse).min().to_numpy()
    order = np.argsort(first, kind="stable")
    n = len(ids)
    n_test, n_val = max(1, round(params.test * n)), max(1, round(params.val * n))
    where = np.empty(n, dtype=object)
    where[order[: n - n_test - n_val]], where[order[n - n_test - n_val : n - n_test]] = "train", "val"
    where[order[n - n_test :]] = "test"
    return where[inverse]


def _by_site(groups: np.ndarray, site: np.ndarray, labels: np.ndarray, params: SplitParams, seed: int) -> np.ndarray:
    """Every group with a row at a site of split.test_sites is test; the other groups split train/val by patient,
    val the share split.val / (1 - split.test) of them as in assign_splits, stratified the same way."""
    held = pd.Series(np.isin(site.astype(str), params.test_sites)).groupby(groups).transform("max").to_numpy()
    where = np.full(len(groups), "test", dtype=object)
    if held.all():
        return where
    ids, inverse, group_label = _group_labels(groups[~held], labels[~held])
    share = params.val / (1 - params.test)
    y = group_label.to_numpy()
    _, val = train_test_split(ids, test_size=share, random_state=seed, stratify=_stratify(y, share))
    where[~held] = np.where(np.isin(ids, val), "val", "train")[inverse]
    return where


def check_no_leakage(df: pd.DataFrame, split: np.ndarray, features: list[str]) -> None:
    problems = []
    for name, key in (
        ("patient", df.get(PATIENT_KEY)),
        ("identical feature row", feature_hashes(df, features)),
    ):
        if key is None:
            continue
        spread = pd.Series(split).groupby(key.to_numpy()).nunique()
        if (spread > 1).any():
            problems.append(f"{int((spread > 1).sum())} {name}(s) appear in more than one split")
    if problems:
        raise LeakageError("split would leak between train/val/test: " + "; ".join(problems))


def _split(params: Params, paths: Paths, df: pd.DataFrame, groups: np.ndarray, strata: np.ndarray) -> np.ndarray:
    sp = params.split
    if sp.by == "patient":
        return assign_splits(groups, strata, sp, params.seed)
    column = sp.time_column if sp.by == "time" else sp.site_column
    if TIME_OR_SITE not in df:
        raise ValueError(f"{paths.cleaned}: no {sp.by} column in the cleaned table: rerun the clean step")
    values = df[TIME_OR_SITE].to_numpy()
    missing = pd.isna(values)
    if missing.any():
        raise ValueError(
            f"{paths.cleaned}: column {column!r}, rule: split.by={sp.by} needs a value on every row; "
            f"{int(missing.sum())} row(s) have none (quarantine them or give them one)"
        )
    if sp.by == "time":
        return _by_time(groups, values.astype("float64"), sp)
    absent = sorted(set(sp.test_sites) - set(values.astype(str)))
    if absent:
        raise ValueError(
            f"{paths.cleaned}: column {column!r}, rule: every split.test_sites is a site of the table; "
            f"{len(absent)} is not: {', '.join(absent)}"
        )
    split = _by_site(groups, values, strata, sp, params.seed)
    if not (split != "test").any():
        raise ValueError(f"{paths.cleaned}: column {column!r}: split.test_sites hold every row, none left to train")
    return split


def run(params: Params, paths: Paths) -> dict:
    if params.data.task == "segmentation":
        from medflow.segmentation import cases

        return cases.split(params, paths)
    df = pd.read_parquet(paths.cleaned)
    schema = Schema.load(paths.schema)
    labels = df[LABEL].to_numpy()
    classed = of(schema).has_classes
    # Survival: stratified by event (a patient with any event against none), so every split holds events.
    events = schema.outcome == "survival"
    if not classed and not events:
        # A continuous target: the groups are stratified by its quintile, so each split spans its range.
        labels = np.searchsorted(np.nanquantile(labels, [0.2, 0.4, 0.6, 0.8]), labels)
    groups = leakage_groups(df, schema.identity_columns)
    # A group's stratum is whether any of its rows is an event, not its majority.
    strata = pd.Series(labels).groupby(groups).transform("max").to_numpy() if events else labels
    split = _split(params, paths, df, groups, strata)
    check_no_leakage(df, split, schema.identity_columns)
    if events:
        for name in SPLITS:
            if not labels[split == name].any():
                raise ValueError(
                    f"{paths.manifest}: the {name} split holds {int((split == name).sum())} rows and no event (rule: "
                    "every split needs events, the C-index and the partial likelihood compare them); enlarge the "
                    "data or split.val and split.test"
                )

    out = paths.step_dir("split")
    out.mkdir(parents=True, exist_ok=True)
    manifest = pd.DataFrame(
        {
            "row_id": df[ROW_ID],
            "patient_key": df.get(PATIENT_KEY, ""),
            "split": split,
        }
    )
    manifest.to_csv(paths.manifest, index=False)
    summary = {
        "by": params.split.by,
        "rows": {s: int((split == s).sum()) for s in SPLITS},
        # Regression: rows per quintile of the target, the strata; survival: censored and event rows.
        "class_counts" if classed else "event_counts" if events else "quintile_counts": {
            s: np.bincount(labels[split == s], minlength=len(schema.classes)).tolist() for s in SPLITS
        },
        "patients": {s: int(manifest.loc[split == s, "patient_key"].nunique()) for s in SPLITS}
        if schema.patient_id
        else None,
        "manifest_sha256": hashlib.sha256(paths.manifest.read_bytes()).hexdigest(),
    }
    paths.summary("split").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
