"""validate: reads the raw table or image set (data.source) and expectations/<dataset>.json, inferring that suite
on first use; writes artifacts/validate/ (valid.parquet, quarantine.csv, columns.json, report.json, summary.json,
profile/; images.npy for images), holding no identifier and the patient id only as its salted key. Fails, before
writing anything, when an undeclared column looks like an identifier or a feature leaks the target (SourceError when
the file is not a table it can read); when a batch-level expectation fails, after writing report.json.
"""

from __future__ import annotations

import shutil

import numpy as np

from medflow.data import sources
from medflow.data.checks import magnitude_checks, run_suite, split_value_checks
from medflow.data.columns import PATIENT_KEY, ROW_ID
from medflow.data.normalise import normalise_numbers
from medflow.data.numbers import Parsed, typed
from medflow.data.selection import Groups
from medflow.data.suite import ValidationFailed, suite_kinds
from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.keys import resolve_salt
from medflow.sequences.steps import validate as validate_events
from medflow.signals.steps import validate as validate_signals
from medflow.tasks import for_params
from medflow.validation.images import validate_images
from medflow.validation.outputs import adopt, finish, judge, where_read
from medflow.validation.quarantine import groupable, held_columns, kinds_of, not_features, patient_key, quarantine
from medflow.validation.screens import decide_suite, declared, refuse_selection
from medflow.validation.streamed import validate_streamed


def run(params: Params, paths: Paths) -> dict:
    for_params(params)  # a task its params do not suit stops here, before anything is read or removed
    out = paths.step_dir("validate")
    # A failed run must not leave the previous run's valid rows behind for `clean`.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if params.data.task == "segmentation":
        from medflow.segmentation import cases

        return cases.validate(params, paths)
    if params.data.kind == "image":
        return validate_images(params, paths)
    if params.data.kind == "events":
        return validate_events(params, paths)
    if params.data.kind == "signals":
        return validate_signals(params, paths)
    data, vp = params.data, params.validate_
    files = sources.source_files(data.source, paths, data.allowed_roots)
    if sum(f.stat().st_size for f in files) > vp.stream_above_mb * 2**20:
        return validate_streamed(params, paths, files)
    where = where_read(files, paths.root)
    df = sources.read_tables(files, data.exclude, data.delimiter, data.encoding)
    if data.max_rows is not None:
        df = df.iloc[: data.max_rows].copy()
    declared(df, data, where)
    if not len(df):
        raise ValidationFailed(f"{where}: no data rows (a header with {len(df.columns)} columns only)")
    df[ROW_ID] = np.arange(len(df), dtype="int64")
    parsed = Parsed(df)
    df, conversions = normalise_numbers(df, data, vp, where, parsed)
    salt = resolve_salt(params)  # before any output: a missing salt must stop the run with nothing written
    suite, created, leaks = decide_suite(df, parsed, params, paths, where)

    kinds, keep = kinds_of(suite, df.columns, data, params.split.column)
    checks = run_suite(df, suite, parsed) + magnitude_checks(df, suite_kinds(suite), vp.max_abs, parsed)
    checks += split_value_checks(df, params.split.column, params.split.by, kinds, parsed)
    dataset = sources.dataset_name(params.data.source)
    judge(checks, paths, where, dataset, suite, vp.data_docs)
    if data.patient_id:
        df.insert(1, PATIENT_KEY, patient_key(df[data.patient_id], salt))
    valid, held = quarantine(df, checks)
    numbers, categorical = groupable(df, kinds, parsed, numeric_target=data.task == "regression")
    groups = Groups.of(numbers, categorical, params.split.unplaced)
    groups.add(numbers, df[categorical], df[ROW_ID].isin(held[ROW_ID]).to_numpy())
    held[held_columns(kinds, keep)].to_csv(out / "quarantine.csv", index=False, lineterminator="\n")
    refuse_selection(groups, checks, len(df), len(held), vp, where)
    adopt(suite, created, paths, where, dataset)
    # Numeric columns leave as the floats parsed here: clean parsing their text again took 7 of its 12 s at 1M rows.
    valid = typed(valid, kinds, parsed)
    valid[keep].reset_index(drop=True).to_parquet(paths.valid_rows, index=False)
    counts = {"rows_in": len(df), "rows_valid": len(valid), "rows_quarantined": len(held)}
    counts["not_features"] = not_features(kinds, parsed, vp)
    return finish(params, paths, where, suite, created, leaks, checks, kinds, counts, conversions, valid)
