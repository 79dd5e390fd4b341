"""Validating a table file larger than validate.stream_above_mb, in two passes of validate.chunk_rows rows: memory
holds a uniform sample and one chunk, and the outputs are those of the table validated whole.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data import sources
from medflow.data.checks import combine, gx_expectations, magnitude_checks, run_suite, split_value_checks
from medflow.data.columns import PATIENT_KEY, ROW_ID
from medflow.data.normalise import convert, normalise_numbers
from medflow.data.numbers import Parsed, typed
from medflow.data.selection import Groups
from medflow.data.suite import COUNTED, Totals, ValidationFailed, suite_kinds
from medflow.params import DataParams, Params, ValidateParams
from medflow.paths import Paths
from medflow.privacy.keys import resolve_salt
from medflow.validation.outputs import adopt, finish, judge, relative, where_read
from medflow.validation.quarantine import groupable, held_columns, kinds_of, not_features, patient_key, quarantine
from medflow.validation.screens import SurvivalTally, decide_suite, declared, refuse_selection


def _chunks(files: list[Path], data: DataParams, vp: ValidateParams):
    """The table in frames of validate.chunk_rows rows (index: row number in the table), data.max_rows at most."""
    left = data.max_rows
    for chunk in sources.read_chunks_of(files, vp.chunk_rows, data.exclude, data.delimiter, data.encoding):
        if left is not None:
            chunk, left = chunk.iloc[:left], left - len(chunk.iloc[:left])
        if len(chunk):
            yield chunk
        if left == 0:
            return


def survey(
    files: list[Path], where: str, data: DataParams, vp: ValidateParams, seed: int, tally: SurvivalTally | None = None
) -> tuple[pd.DataFrame, Totals]:
    """First pass over a streamed table: a uniform sample of validate.sample_rows rows (each row's chance the same
    whatever the chunk size: the rows with the smallest random keys) and the Totals its suite needs; every chunk
    added to tally (a survival table's time and event) too."""
    rng = np.random.default_rng(seed)
    k = vp.sample_rows
    sample, keys = None, np.empty(0)
    rows, missing, counts = 0, None, {}
    for chunk in _chunks(files, data, vp):
        rows += len(chunk)
        if tally is not None:
            tally.add(chunk)
        nulls = chunk.isna().sum()
        missing = nulls if missing is None else missing + nulls
        for col in chunk.columns:
            if counts.get(col, 0) is not None:
                vc = chunk[col].value_counts()
                merged = vc if col not in counts else counts[col].add(vc, fill_value=0)
                counts[col] = merged.astype("int64") if len(merged) <= COUNTED else None
        drawn = rng.random(len(chunk))
        # A row whose key is above the k-th smallest so far can never be among the k smallest.
        fresh = drawn < keys.max() if len(keys) >= k else np.ones(len(chunk), dtype=bool)
        sample = chunk[fresh] if sample is None else pd.concat([sample, chunk[fresh]])
        keys = np.concatenate([keys, drawn[fresh]])
        if len(keys) > k:
            kept = np.sort(np.argpartition(keys, k - 1)[:k])
            sample, keys = sample.iloc[kept], keys[kept]
    if sample is None:
        raise ValidationFailed(f"{where}: no data rows (a header only)")
    sample = sample.sort_index().copy()
    sample[ROW_ID] = sample.index.to_numpy(dtype="int64")
    return sample, Totals(rows, missing, counts)


def _parquet_schema(frame: pd.DataFrame, kinds: dict[str, str]):
    """valid.parquet's columns, fixed for every chunk: a chunk whose category column is all missing is still text."""
    import pyarrow as pa

    types = {ROW_ID: pa.int64(), **{c: pa.float64() for c, k in kinds.items() if k == "numeric"}}
    return pa.schema([(c, types.get(c, pa.string())) for c in frame.columns])


def validate_streamed(params: Params, paths: Paths, files: list[Path]) -> dict:
    """run() for a table file larger than validate.stream_above_mb, in two passes of chunk_rows rows: the first
    samples it (the suite, identifier and leakage screens and the profile read the sample), the second checks every
    row and writes valid and quarantined rows chunk by chunk. Memory holds the sample and one chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, vp, out = params.data, params.validate_, paths.step_dir("validate")
    where = where_read(files, paths.root)
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    salt = resolve_salt(params)
    # A survival table's time and event rules read every row on the first pass, before the suite is decided.
    tally = SurvivalTally(data) if data.task == "survival" else None
    sample, totals = survey(files, where, data, vp, params.seed, tally)
    if tally is not None:
        tally.check(where)
    declared(sample, data, where)
    parsed = Parsed(sample)
    sample, formats = normalise_numbers(sample, data, vp, where, parsed)
    suite, created, leaks = decide_suite(sample, parsed, params, paths, where, totals)
    dataset = sources.dataset_name(data.source)
    gx = gx_expectations(suite)
    if gx:
        raise ValidationFailed(
            f"{relative(paths.suite(dataset), paths.root)}: expectation type(s) {gx} are evaluated by Great "
            f"Expectations on the whole table at once, and {where} ({size_mb:.0f} MB) is "
            f"validated in chunks (validate.stream_above_mb={vp.stream_above_mb:g}): remove them, or raise "
            "validate.stream_above_mb to validate it in memory"
        )
    kinds, keep = kinds_of(suite, sample.columns, data, params.split.column)
    sampled = sample[ROW_ID].to_numpy()
    # A regression's target is grouped as a number, as in memory (steps/validate.py).
    numeric_target = data.task == "regression"
    groups = Groups.of(*groupable(sample, kinds, parsed, numeric_target), params.split.unplaced)
    text_why = not_features(kinds, parsed, vp)
    del sample, parsed
    parts, profiled, converted = [], [], dict.fromkeys(formats, 0)
    rows = valid_rows = chunks = 0
    valid_part, held_part = out / "valid.parquet.part", out / "quarantine.csv.part"
    writer = None
    try:
        with held_part.open("w", encoding="utf-8", newline="") as held_file:
            for chunk in _chunks(files, data, vp):
                chunk[ROW_ID] = chunk.index.to_numpy(dtype="int64")
                parsed = Parsed(chunk)
                chunk, n = convert(chunk, formats, vp, where, parsed)
                for col, c in n.items():
                    converted[col] += c
                checks = run_suite(chunk, suite, parsed) + magnitude_checks(chunk, suite_kinds(suite), vp.max_abs,
                                                                           parsed)  # fmt: skip
                checks += split_value_checks(chunk, params.split.column, params.split.by, kinds, parsed)
                if data.patient_id:
                    chunk.insert(1, PATIENT_KEY, patient_key(chunk[data.patient_id], salt))
                valid, held = quarantine(chunk, checks)
                numbers, categorical = groupable(chunk, kinds, parsed, numeric_target)
                groups.add(numbers, chunk[categorical], chunk[ROW_ID].isin(held[ROW_ID]).to_numpy())
                # Only a row check's ids are needed once its chunk is written: a batch check's (a not-null check has
                # one per missing cell) would make memory grow with the table.
                parts.append([c if c.level == "row" else replace(c, row_ids=()) for c in checks])
                valid = typed(valid, kinds, parsed)
                rows_out = valid[keep].reset_index(drop=True)
                if writer is None:
                    writer = pq.ParquetWriter(valid_part, _parquet_schema(rows_out, kinds))
                writer.write_table(pa.Table.from_pandas(rows_out, schema=writer.schema, preserve_index=False))
                held[held_columns(kinds, keep)].to_csv(held_file, header=not chunks, index=False,
                                                        lineterminator="\n")  # fmt: skip
                profiled.append(valid[np.isin(valid[ROW_ID].to_numpy(), sampled)])
                rows, valid_rows, chunks = rows + len(chunk), valid_rows + len(valid), chunks + 1
        if rows != totals.rows:
            raise ValidationFailed(f"{where}: {totals.rows} rows on the first pass, {rows} on the second: the file "
                                   "changed while it was validated; run again once it is written")  # fmt: skip
        writer.close()
        checks = combine(parts, suite, rows, vp.max_abs)
        judge(checks, paths, where, dataset, suite, vp.data_docs)
    except BaseException:
        if writer is not None:
            writer.close()
        valid_part.unlink(missing_ok=True)
        held_part.unlink(missing_ok=True)
        raise
    held_part.replace(out / "quarantine.csv")
    try:
        refuse_selection(groups, checks, rows, rows - valid_rows, vp, where)
    except ValidationFailed:
        valid_part.unlink()
        raise
    adopt(suite, created, paths, where, dataset)
    valid_part.replace(paths.valid_rows)
    counts = {"rows_in": rows, "rows_valid": valid_rows, "rows_quarantined": rows - valid_rows,
              "not_features": text_why}  # fmt: skip
    conversions = {c: replace(f, n=converted[c]) for c, f in formats.items()}
    streamed = {"file_mb": round(size_mb, 1), "chunks": chunks, "chunk_rows": vp.chunk_rows,
                "sample_rows": len(sampled)}  # fmt: skip
    profile_rows = pd.concat(profiled)
    return finish(params, paths, where, suite, created, leaks, checks, kinds, counts, conversions, profile_rows,
                   streamed)  # fmt: skip
