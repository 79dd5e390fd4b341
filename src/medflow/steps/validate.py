"""validate: reads the raw table or image set (data.source) and expectations/<dataset>.json, inferring that suite
on first use; writes artifacts/validate/ (valid.parquet, quarantine.csv, columns.json, report.json, summary.json,
profile/; images.npy for images), holding no identifier and the patient id only as its salted key. Fails, before
writing anything, when an undeclared column looks like an identifier or a feature leaks the target (SourceError when
the file is not a table it can read); when a batch-level expectation fails, after writing report.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data import data_docs, image_validation, images, sources
from medflow.data.features import CONTENT_HASH
from medflow.data.numbers import Conversion
from medflow.data.profile import (
    association,
    build_profile,
    numeric_associations,
    positives,
    save_figures,
    to_markdown,
)
from medflow.data.selection import Groups, concentrated
from medflow.data.suite import (
    COUNTED,
    ROW_ID,
    Check,
    Parsed,
    Totals,
    ValidationFailed,
    column_kinds,
    combine,
    convert,
    gx_expectations,
    infer_suite,
    magnitude_checks,
    normalise_numbers,
    role_mismatches,
    roles,
    run_suite,
    suite_kinds,
    typed,
    without,
)
from medflow.params import DataParams, Params, ValidateParams, yaml_list
from medflow.paths import Paths
from medflow.privacy import classify
from medflow.privacy.keys import PATIENT_KEY, pseudonymise, resolve_salt
from medflow.sidecar import sidecar

__all__ = ["ValidationFailed", "batch_failures", "quarantine", "report", "run"]

log = logging.getLogger(__name__)


def batch_failures(checks: list[Check]) -> list[str]:
    return [f"{c.type}: {c.column + ': ' if c.column else ''}{c.detail}" for c in checks if c.stops]


def quarantine(df: pd.DataFrame, checks: list[Check]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits df into valid rows and quarantined rows (ROW_ID, reason, original columns), one per row."""
    reasons: dict[int, list[str]] = {}
    for c in checks:
        if c.level == "row":
            for rid in c.row_ids:
                reasons.setdefault(rid, []).append(c.reason)
    bad = df[ROW_ID].isin(reasons)
    held = df[bad].copy()
    held.insert(0, "reason", ["; ".join(reasons[r]) for r in held[ROW_ID]])
    cols = [ROW_ID, "reason", *(c for c in df.columns if c != ROW_ID)]
    return df[~bad], held[cols]


def report(checks: list[Check], failures: list[str]) -> dict:
    return {
        "success": not failures,
        "batch_failures": failures,
        "expectations": [
            {
                "type": c.type,
                "column": c.column,
                "level": c.level,
                "success": c.success,
                "unexpected_count": c.unexpected_count,
            }
            for c in checks
        ],
    }


def _write_json(path: Path, obj: object, sort_keys: bool = False) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _where(files: list[Path], root: Path) -> str:
    """data.source, and the batches `medflow monitor --update` added to it."""
    more = f" and {len(files) - 1} batch file(s) in {_relative(files[1].parent, root)}" if len(files) > 1 else ""
    return _relative(files[0], root) + more


def _declared(df: pd.DataFrame, data: DataParams, where: str) -> None:
    """Every column params.data names must be in the table, and none may be both excluded and used."""
    named = {"data.target": [data.target], "data.patient_id": [data.patient_id] if data.patient_id else [],
             "data.identifiers": data.identifiers}  # fmt: skip
    both = sorted(set(data.exclude) & {c for cols in named.values() for c in cols})
    if both:
        raise ValidationFailed(f"{where}: column(s) {both} are in data.exclude and also named in params.data")
    for key, cols in named.items():
        absent = [c for c in cols if c not in df.columns]
        if absent:
            raise ValidationFailed(
                f"{where}: {key} names column(s) {absent} that are not in the table ({len(df.columns)} columns)"
            )


def _refuse_suspects(df: pd.DataFrame, data: DataParams, kinds: dict[str, str], where: str, parsed: Parsed) -> None:
    # Every other column is screened as text, whatever kind it was taken for: notes that mostly repeat read as
    # categories, and a categorical column's values reach the suite, the profile and the model.
    numeric = {c for c, k in kinds.items() if k == "numeric" and parsed.count(c) == parsed.present[c]}
    # The numbers each column parsed to, as parsed once for every check: not parsed again per screen.
    rows = (df[ROW_ID].to_numpy(dtype="float64"), {c: parsed[c].to_numpy() for c in numeric})
    found = classify.suspects(df.drop(columns=ROW_ID), set(roles(data)), numeric, rows, not data.patient_id)
    if found:
        patient = [s.column for s in found if s.repeats]
        cols = [s.column for s in found if not s.repeats]
        fix = [f"-P data.patient_id={patient[0]}"] if patient else []
        fix += [f"-P 'data.identifiers={yaml_list([*data.identifiers, *cols])}'"] if cols else []
        drop = yaml_list([*data.exclude, *patient, *cols])
        raise ValidationFailed(
            f"{where}: {len(found)} undeclared column(s) look like patient identifiers or row numbers (nothing was "
            "written): "
            + "; ".join(map(str, found))
            + f". Declare them ({' '.join(fix)}) to keep them out of every output"
            + (" and each patient's visits in one split" if patient else "")
            + f", or drop them as the table is read (-P 'data.exclude={drop}')"
        )


def leakage(df: pd.DataFrame, kinds: dict[str, str], data: DataParams, vp: ValidateParams) -> dict[str, dict]:
    """{column: {"auc", "rule"}} for features that alone predict the target at leakage_auc or better."""
    df = df[df[data.target].notna()]
    labels = df[data.target].astype("string")
    positive = positives(sorted(labels.dropna().unique()), data)
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    aucs = numeric_associations(df[numeric].astype("float64"), labels.fillna(""), positive)
    for col, kind in kinds.items():
        if kind == "categorical":
            aucs[col] = association(df[col], kind, labels, positive)
    found = {}
    for col, auc in aucs.items():
        if auc is not None and auc >= vp.leakage_auc:
            pairs = df[[col, data.target]].dropna().drop_duplicates()
            recoded = pairs[col].is_unique and pairs[data.target].is_unique
            found[col] = {"auc": auc, "rule": "a 1:1 recoding of the target" if recoded else "single-feature ROC-AUC"}
    return found


def _refuse_leaks(leaks: dict[str, dict], data: DataParams, vp: ValidateParams, where: str) -> None:
    stopped = {c: v for c, v in leaks.items() if c not in vp.accept_leakage}
    if stopped:
        raise ValidationFailed(
            f"{where}: suspected target leakage in {len(stopped)} column(s): "
            + "; ".join(
                f"{c!r} alone predicts {data.target!r} with ROC-AUC {v['auc']:.3f} ({v['rule']})"
                for c, v in stopped.items()
            )  # fmt: skip
            + f" (validate.leakage_auc={vp.leakage_auc}). If it is recorded after the outcome, drop it "
            f"(-P 'data.exclude={yaml_list([*data.exclude, *stopped])}'); if it is a legitimate predictor, accept it "
            f"(-P 'validate.accept_leakage={yaml_list([*vp.accept_leakage, *stopped])}')"
        )


def _key(ids: pd.Series, salt: str | None) -> pd.Series:
    """The salted patient key; missing where the id is missing (such rows are quarantined)."""
    return pseudonymise(ids, salt or "").where(ids.notna())


def _written_columns(kinds: dict[str, str]) -> list[str]:
    """What may leave validate: features and the target. Identifiers, free text and dates never do; the patient
    id leaves only as its salted key."""
    return [c for c, k in kinds.items() if k in ("numeric", "categorical", "target")]


def _held_columns(kinds: dict[str, str], keep: list[str]) -> list[str]:
    """What quarantine.csv holds: the row number (which finds the row in the source), the reason, the salted key and
    the numeric columns. Never the text of another column: a category a suite did not know may be a name or a note
    that got past every screen, and the reason names its column and rule."""
    return [ROW_ID, "reason", *(c for c in keep[1:] if c == PATIENT_KEY or kinds.get(c) == "numeric")]


def run(params: Params, paths: Paths) -> dict:
    out = paths.step_dir("validate")
    # A failed run must not leave the previous run's valid rows behind for `clean`.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if params.data.kind == "image":
        return _run_images(params, paths)
    data, vp = params.data, params.validate_
    files = sources.source_files(data.source, paths, data.allowed_roots)
    if sum(f.stat().st_size for f in files) > vp.stream_above_mb * 2**20:
        return _run_streamed(params, paths, files)
    where = _where(files, paths.root)
    df = sources.read_tables(files, data.exclude, data.delimiter, data.encoding)
    if data.max_rows is not None:
        df = df.iloc[: data.max_rows].copy()
    _declared(df, data, where)
    if not len(df):
        raise ValidationFailed(f"{where}: no data rows (a header with {len(df.columns)} columns only)")
    df[ROW_ID] = np.arange(len(df), dtype="int64")
    parsed = Parsed(df)
    df, conversions = normalise_numbers(df, data, vp, where, parsed)
    salt = resolve_salt(params)  # before any output: a missing salt must stop the run with nothing written
    suite, created, leaks = _decide(df, parsed, params, paths, where)

    checks = run_suite(df, suite, parsed) + magnitude_checks(df, suite_kinds(suite), vp.max_abs, parsed)
    dataset = sources.dataset_name(params.data.source)
    _judge(checks, paths, where, dataset, suite)
    kinds, keep = _kinds(suite, df.columns, data)
    if data.patient_id:
        df.insert(1, PATIENT_KEY, _key(df[data.patient_id], salt))
    valid, held = quarantine(df, checks)
    numbers, categorical = _groupable(df, kinds, parsed)
    groups = Groups.of(numbers, categorical)
    groups.add(numbers, df[categorical], df[ROW_ID].isin(held[ROW_ID]).to_numpy())
    held[_held_columns(kinds, keep)].to_csv(out / "quarantine.csv", index=False, lineterminator="\n")
    _refuse_selection(groups, checks, len(df), len(held), vp, where)
    _adopt(suite, created, paths, where, dataset)
    # Numeric columns leave as the floats parsed here: clean parsing their text again took 7 of its 12 s at 1M rows.
    valid = typed(valid, kinds, parsed)
    valid[keep].reset_index(drop=True).to_parquet(paths.valid_rows, index=False)
    counts = {"rows_in": len(df), "rows_valid": len(valid), "rows_quarantined": len(held)}
    counts["not_features"] = _not_features(kinds, parsed, vp)
    return _finish(params, paths, where, suite, created, leaks, checks, kinds, counts, conversions, valid)


def _not_features(kinds: dict[str, str], parsed: Parsed, vp: ValidateParams) -> dict[str, str]:
    """Why each text column is no feature; a column of mostly numbers says how many values are not (never which)."""
    why = {}
    for col in (c for c, k in kinds.items() if k == "text"):
        given, numbers = int(parsed.present.get(col, 0)), parsed.count(col) if col in parsed.df else 0
        if given and numbers >= given / 2:
            why[col] = (
                f"{given - numbers} of {given} values are not numbers (validate.type_mostly={vp.type_mostly:g}): read "
                "as text; write them as numbers, or as a missing word such as NA"
            )
        else:
            why[col] = "free text or dates"
    return why


def _groupable(frame: pd.DataFrame, kinds: dict[str, str], parsed: Parsed) -> tuple[dict[str, np.ndarray], list[str]]:
    """The columns a quarantine could select patients by: numbers (as parsed) and categories, the target's too."""
    numeric = [c for c, k in kinds.items() if k == "numeric" and c in frame]
    x = parsed.matrix(numeric, frame.index)
    return {c: x[:, j] for j, c in enumerate(numeric)}, [
        c for c, k in kinds.items() if k in ("categorical", "target") and c in frame
    ]


def _refuse_selection(groups: Groups, checks: list[Check], rows: int, held: int, vp: ValidateParams, where: str):
    """Stops when the quarantine takes more than validate.max_quarantine of the rows, or concentrates on a group."""
    rules = sorted(((len(c.row_ids), c.rule) for c in checks if c.level == "row" and c.row_ids), reverse=True)
    most = f"; most for {rules[0][1]} ({rules[0][0]} rows)" if rules else ""
    fix = (
        "Read the reasons in artifacts/validate/quarantine.csv and fix the source (a column written two ways, a "
        "unit, an export cut short); once reviewed, raise the limit (-P validate.max_quarantine=...)"
    )
    if held > vp.max_quarantine * rows:
        raise ValidationFailed(
            f"{where}: quarantine takes {held} of {rows} rows ({held / rows:.1%}), more than "
            f"validate.max_quarantine={vp.max_quarantine:g}{most}; training on the rest would bias the model. {fix}"
        )
    found = concentrated(groups, rows, held, vp.max_quarantine, vp.small_count)
    if found:
        raise ValidationFailed(
            f"{where}: quarantine takes {held} of {rows} rows ({held / rows:.1%}), concentrated where "
            f"{'; '.join(found[:3])} (more than validate.max_quarantine={vp.max_quarantine:g} of the group){most}; "
            f"training on the rest would leave that group out. {fix}"
        )


def _decide(df: pd.DataFrame, parsed: Parsed, params: Params, paths: Paths, where: str, totals: Totals | None = None):
    """(suite, created, leaks) for the table df is, or with totals a uniform sample of; fails before anything is
    written when a column looks like an identifier or leaks the target, or the suite disagrees with params."""
    data, vp = params.data, params.validate_
    suite_path = paths.suite(sources.dataset_name(data.source))
    created = not suite_path.exists()
    suite = None if created else without(json.loads(suite_path.read_text()), data.exclude)
    if suite is not None:
        mismatches = role_mismatches(suite, data)
        if mismatches:
            raise ValidationFailed(
                f"{_relative(suite_path, paths.root)}: column roles differ from params.data: "
                f"{'; '.join(mismatches)}. Fix params or the suite's meta.medflow.columns, or delete the suite "
                "to infer it again."
            )
    # Privacy and leakage come first: until every column has a role, nothing is written.
    _positive_occurs(df, data, where, totals)
    inferred = column_kinds(df, data, vp, parsed)
    _refuse_suspects(df, data, inferred, where, parsed)
    # Columns the suite does not know yet (a new export field) are judged by their inferred kind.
    kinds_now = inferred if suite is None else inferred | {c: k for c, k in suite_kinds(suite).items() if c in df}
    leaks = leakage(typed(df, kinds_now, parsed), kinds_now, data, vp)
    _refuse_leaks(leaks, data, vp, where)
    if suite is None:
        dataset = sources.dataset_name(data.source)
        suite = infer_suite(df, data, vp, name=dataset, source=where, parsed=parsed, totals=totals)
    return suite, created, leaks


def _positive_occurs(df: pd.DataFrame, data: DataParams, where: str, totals: Totals | None) -> None:
    # A positive class the target never takes leaves the leakage screen no positive row to score.
    if data.positive_class is None or data.target not in df:
        return
    counted = totals.counts.get(data.target) if totals is not None else None
    values = counted.index if counted is not None else df[data.target].dropna().unique()
    classes = sorted({str(v).strip() for v in values})
    if len(classes) > 1 and data.positive_label(classes) is None:  # fewer classes have an error of their own
        raise ValidationFailed(
            f"{where}: data.positive_class={data.positive_class!r} never occurs in target column {data.target!r} "
            f"(values: {classes[:10]}); set it to one of them"
        )


def _judge(checks: list[Check], paths: Paths, where: str, dataset: str, suite: dict) -> None:
    """Writes report.json and the Data Docs; fails when a batch-level expectation failed."""
    data_docs.write(paths.data_docs, suite, checks, dataset)
    failures = batch_failures(checks)
    _write_json(paths.step_dir("validate") / "report.json",
                {"dataset": dataset, "source": where, **report(checks, failures)})  # fmt: skip
    if failures:
        raise ValidationFailed(
            f"{where}: {len(failures)} batch-level expectation(s) failed:\n  " + "\n  ".join(failures)
        )


def _adopt(suite: dict, created: bool, paths: Paths, where: str, dataset: str) -> None:
    """Writes a suite inferred this run, once its batch passed every check and the quarantine guard."""
    if created:
        # Written only once the batch passes: a suite inferred from a broken batch would bless it.
        suite_path = paths.suite(dataset)
        suite_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(suite_path, suite, sort_keys=True)
        log.info("inferred %s from %s: review it and commit it", suite_path, where)


def _kinds(suite: dict, columns: pd.Index, data: DataParams) -> tuple[dict[str, str], list[str]]:
    """The kind of each column (in file order, for people reading the profile) and the columns valid.parquet holds."""
    known = suite_kinds(suite)
    kinds = {c: known[c] for c in columns if c in known}
    keep = [ROW_ID, *_written_columns(kinds)]
    if data.patient_id:
        keep.insert(1, PATIENT_KEY)
    return kinds, keep


def _finish(
    params: Params,
    paths: Paths,
    where: str,
    suite: dict,
    created: bool,
    leaks: dict[str, dict],
    checks: list[Check],
    kinds: dict[str, str],
    counts: dict[str, int],
    conversions: dict[str, Conversion],
    profiled: pd.DataFrame,
    streamed: dict | None = None,
) -> dict:
    """columns.json, formats.json, the profile (of profiled: the valid rows, or a uniform sample of them) and
    summary.json."""
    data, vp, out = params.data, params.validate_, paths.step_dir("validate")
    dataset = sources.dataset_name(data.source)
    _write_json(out / "columns.json", kinds)
    _write_json(paths.number_formats, {c: v.format.to_dict() for c, v in conversions.items() if c in kinds})
    profile = build_profile(profiled, kinds, data, vp)
    if len(profiled) < counts["rows_valid"]:
        profile["sample_of"] = counts["rows_valid"]
    (out / "profile").mkdir()
    (out / "profile" / "profile.md").write_text(to_markdown(profile, dataset))
    sidecar.draw("validate's profile figures", save_figures, profile, out / "profile")

    rules = {c.rule: len(c.row_ids) for c in checks if c.level == "row" and c.row_ids}
    summary = {
        "dataset": dataset,
        "source": where,
        "suite": _relative(paths.suite(dataset), paths.root),
        "suite_created": created,
        **{k: v for k, v in counts.items() if k != "not_features"},
        "quarantine_reasons": dict(sorted(rules.items())),
        "leakage_suspects": profile["leakage_suspects"],
        # What the model card reports: which columns were judged, and what was decided about them.
        "columns": {
            "identifiers": [c for c, k in kinds.items() if k in ("identifier", "patient_id")],
            "not_features": counts["not_features"],
            "excluded": list(data.exclude),
            "converted": {c: str(v) for c, v in conversions.items()},
        },
        "leakage": {
            "threshold": vp.leakage_auc,
            "accepted": {c: v for c, v in leaks.items() if c in vp.accept_leakage},
        },
        **({"streamed": streamed} if streamed else {}),
    }
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    _write_json(paths.summary("validate"), summary)
    log.info("validate %s: %d rows, %d valid, %d quarantined", dataset, counts["rows_in"], counts["rows_valid"],
             counts["rows_quarantined"])  # fmt: skip
    return summary


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


def _survey(
    files: list[Path], where: str, data: DataParams, vp: ValidateParams, seed: int
) -> tuple[pd.DataFrame, Totals]:
    """First pass over a streamed table: a uniform sample of validate.sample_rows rows (each row's chance the same
    whatever the chunk size: the rows with the smallest random keys) and the Totals its suite needs."""
    rng = np.random.default_rng(seed)
    k = vp.sample_rows
    sample, keys = None, np.empty(0)
    rows, missing, counts = 0, None, {}
    for chunk in _chunks(files, data, vp):
        rows += len(chunk)
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


def _schema(frame: pd.DataFrame, kinds: dict[str, str]):
    """valid.parquet's columns, fixed for every chunk: a chunk whose category column is all missing is still text."""
    import pyarrow as pa

    types = {ROW_ID: pa.int64(), **{c: pa.float64() for c, k in kinds.items() if k == "numeric"}}
    return pa.schema([(c, types.get(c, pa.string())) for c in frame.columns])


def _run_streamed(params: Params, paths: Paths, files: list[Path]) -> dict:
    """run() for a table file larger than validate.stream_above_mb, in two passes of chunk_rows rows: the first
    samples it (the suite, identifier and leakage screens and the profile read the sample), the second checks every
    row and writes valid and quarantined rows chunk by chunk. Memory holds the sample and one chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, vp, out = params.data, params.validate_, paths.step_dir("validate")
    where = _where(files, paths.root)
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    salt = resolve_salt(params)
    sample, totals = _survey(files, where, data, vp, params.seed)
    _declared(sample, data, where)
    parsed = Parsed(sample)
    sample, formats = normalise_numbers(sample, data, vp, where, parsed)
    suite, created, leaks = _decide(sample, parsed, params, paths, where, totals)
    dataset = sources.dataset_name(data.source)
    gx = gx_expectations(suite)
    if gx:
        raise ValidationFailed(
            f"{_relative(paths.suite(dataset), paths.root)}: expectation type(s) {gx} are evaluated by Great "
            f"Expectations on the whole table at once, and {where} ({size_mb:.0f} MB) is "
            f"validated in chunks (validate.stream_above_mb={vp.stream_above_mb:g}): remove them, or raise "
            "validate.stream_above_mb to validate it in memory"
        )
    kinds, keep = _kinds(suite, sample.columns, data)
    sampled = sample[ROW_ID].to_numpy()
    groups = Groups.of(*_groupable(sample, kinds, parsed))
    not_features = _not_features(kinds, parsed, vp)
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
                if data.patient_id:
                    chunk.insert(1, PATIENT_KEY, _key(chunk[data.patient_id], salt))
                valid, held = quarantine(chunk, checks)
                numbers, categorical = _groupable(chunk, kinds, parsed)
                groups.add(numbers, chunk[categorical], chunk[ROW_ID].isin(held[ROW_ID]).to_numpy())
                # Only a row check's ids are needed once its chunk is written: a batch check's (a not-null check has
                # one per missing cell) would make memory grow with the table.
                parts.append([c if c.level == "row" else replace(c, row_ids=()) for c in checks])
                valid = typed(valid, kinds, parsed)
                rows_out = valid[keep].reset_index(drop=True)
                if writer is None:
                    writer = pq.ParquetWriter(valid_part, _schema(rows_out, kinds))
                writer.write_table(pa.Table.from_pandas(rows_out, schema=writer.schema, preserve_index=False))
                held[_held_columns(kinds, keep)].to_csv(held_file, header=not chunks, index=False,
                                                        lineterminator="\n")  # fmt: skip
                profiled.append(valid[np.isin(valid[ROW_ID].to_numpy(), sampled)])
                rows, valid_rows, chunks = rows + len(chunk), valid_rows + len(valid), chunks + 1
        if rows != totals.rows:
            raise ValidationFailed(f"{where}: {totals.rows} rows on the first pass, {rows} on the second: the file "
                                   "changed while it was validated; run again once it is written")  # fmt: skip
        writer.close()
        checks = combine(parts, suite, rows, vp.max_abs)
        _judge(checks, paths, where, dataset, suite)
    except BaseException:
        if writer is not None:
            writer.close()
        valid_part.unlink(missing_ok=True)
        held_part.unlink(missing_ok=True)
        raise
    held_part.replace(out / "quarantine.csv")
    try:
        _refuse_selection(groups, checks, rows, rows - valid_rows, vp, where)
    except ValidationFailed:
        valid_part.unlink()
        raise
    _adopt(suite, created, paths, where, dataset)
    valid_part.replace(paths.valid_rows)
    counts = {"rows_in": rows, "rows_valid": valid_rows, "rows_quarantined": rows - valid_rows,
              "not_features": not_features}  # fmt: skip
    conversions = {c: replace(f, n=converted[c]) for c, f in formats.items()}
    streamed = {"file_mb": round(size_mb, 1), "chunks": chunks, "chunk_rows": vp.chunk_rows,
                "sample_rows": len(sampled)}  # fmt: skip
    profile_rows = pd.concat(profiled)
    return _finish(params, paths, where, suite, created, leaks, checks, kinds, counts, conversions, profile_rows,
                   streamed)  # fmt: skip


def _run_images(params: Params, paths: Paths) -> dict:
    """The image path of run(): one valid.parquet row per valid image, row i <-> images.npy[i]."""
    data, out = params.data, paths.step_dir("validate")
    salt = resolve_salt(params)
    dataset = images.dataset_name(data.source)
    suite_path = paths.suite(dataset)
    suite_name = _relative(suite_path, paths.root)
    suite = json.loads(suite_path.read_text()) if suite_path.exists() else None
    if suite is not None:
        if suite.get("kind") != "image":
            raise ValidationFailed(f"{suite_name}: not an image suite (data.kind is image); delete it to infer one")
        mismatches = role_mismatches(suite, data)
        if mismatches:
            raise ValidationFailed(
                f"{suite_name}: column roles differ from params.data: {'; '.join(mismatches)}. Fix params or the "
                "suite's meta.medflow.columns, or delete the suite to infer it again."
            )
    try:
        src = images.load_image_source(data, paths, required=suite["required_columns"] if suite else ())
    except ValidationFailed as exc:
        _write_json(out / "report.json", {"dataset": dataset, "source": data.source, **report([], [str(exc)])})
        raise
    created = suite is None
    if created:
        suite = image_validation.infer_image_suite(src, data, params.validate_, name=dataset)

    checks, reasons = image_validation.check_images(src, data, suite)
    failures = batch_failures(checks)
    _write_json(out / "report.json", {"dataset": dataset, "source": src.where, **report(checks, failures)})
    if failures:
        raise ValidationFailed(
            f"{src.where}: {len(failures)} batch-level expectation(s) failed:\n  " + "\n  ".join(failures)
        )
    if created:
        # Written only once the batch passes: a suite inferred from a broken batch would bless it.
        suite_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(suite_path, suite)
        log.info("inferred %s from %s: review it and commit it", suite_path, src.where)

    table = src.table
    bad = table[ROW_ID].isin(reasons).to_numpy()
    keep = np.flatnonzero(~bad)
    pixels = src.images[keep] if isinstance(src.images, np.ndarray) else np.stack([src.images[i] for i in keep])
    valid = table.iloc[keep].reset_index(drop=True)
    valid[data.target] = valid[data.target].astype(str)
    valid[CONTENT_HASH] = [image_validation.content_hash(im) for im in pixels]
    held = table[bad].copy()
    held.insert(1, "reason", [reasons[r] for r in held[ROW_ID]])
    # As for tables: the patient id leaves validate as its salted key only; identifiers not at all, nor (in
    # quarantine, where the row number finds the row) file paths, which can carry names, or other text.
    identifiers = [*data.identifiers, *([data.patient_id] if data.patient_id else [])]
    for frame in (valid, held):
        if data.patient_id:
            frame.insert(2 if "reason" in frame else 1, PATIENT_KEY, _key(frame[data.patient_id], salt))
        frame.drop(columns=identifiers, inplace=True)
    known = image_validation.column_kinds(table, data, params.validate_) | suite_kinds(suite)
    kinds = {c: known[c] for c in table.columns if c in known}

    valid.to_parquet(paths.valid_rows, index=False)
    np.save(out / "images.npy", pixels)
    held[_held_columns(kinds, list(held.columns.drop("reason")))].to_csv(out / "quarantine.csv", index=False,
                                                                       lineterminator="\n")  # fmt: skip
    _write_json(out / "columns.json", kinds)
    profile = image_validation.image_profile(valid[data.target], pixels, data.target, params.validate_)
    (out / "profile").mkdir()
    (out / "profile" / "profile.md").write_text(image_validation.profile_markdown(profile, dataset))
    sidecar.draw("validate's profile figures", image_validation.save_profile_figures, profile, out / "profile")

    summary = {
        "dataset": dataset,
        "source": src.where,
        "suite": suite_name,
        "suite_created": created,
        "image_shape": suite["image_shape"],
        "rows_in": len(table),
        "rows_valid": len(valid),
        "rows_quarantined": len(held),
        "quarantine_reasons": dict(sorted((c.rule, len(c.row_ids)) for c in checks if c.row_ids)),
        "leakage_suspects": [],
    }
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    _write_json(paths.summary("validate"), summary)
    log.info("validate %s: %d images, %d valid, %d quarantined", dataset, len(table), len(valid), len(held))
    return summary
