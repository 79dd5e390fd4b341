"""New rows to check: a CSV/Parquet file, or a folder whose files not yet checked make the batch. What was checked
is remembered by file name and md5 in artifacts/monitor/checked.json (no rows), so a scheduled run sees only what
arrived since the last one. A labelled batch that `medflow monitor --update` adds to the training data becomes a new
file in data/batches/<dataset>/, which validate reads after data.source."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from medflow.data.sources import batch_dir, read_chunks, read_table, resolve
from medflow.paths import Paths

SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pending(batch: Path, state: Path) -> list[Path]:
    """The files of a batch path not checked before (a file given by name is always checked)."""
    if batch.is_file():
        return [batch]
    if not batch.is_dir():
        raise FileNotFoundError(f"batch {batch} not found: give a CSV/Parquet file or a folder of them")
    seen = json.loads(state.read_text()) if state.exists() else {}
    files = sorted(p for p in batch.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    return [p for p in files if seen.get(str(p.resolve())) != _md5(p)]


def remember(files: list[Path], state: Path) -> None:
    seen = json.loads(state.read_text()) if state.exists() else {}
    seen |= {str(p.resolve()): _md5(p) for p in files}
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(seen, indent=2) + "\n")


def read(files: list[Path], exclude: list[str]) -> pd.DataFrame:
    """Every column as text, as `validate` reads data.source; the files must share their columns."""
    frames = [read_table(f, exclude) for f in files]
    first = list(frames[0].columns)
    for f, df in zip(files[1:], frames[1:], strict=True):
        if set(df.columns) != set(first):
            raise ValueError(f"{f} has other columns than {files[0]}: {sorted(set(df.columns) ^ set(first))}")
    return pd.concat([df[first] for df in frames], ignore_index=True)


def add(source: str, paths: Paths, files: list[Path], delimiter: str | None, encoding: str | None) -> Path:
    """Writes the batch files' rows, in data.source's columns, as one new CSV under data/batches/<dataset>/, which
    validate reads after the source; returns it. No file under data/ is edited. Read as text and written as text, so
    values reach `validate` exactly as they arrived."""
    src = resolve(source, paths)
    columns = list(next(read_chunks(src, 1, (), delimiter, encoding)).columns)
    new = pd.concat([read_table(f) for f in files], ignore_index=True)
    missing = [c for c in columns if c not in new.columns]
    if missing:
        raise ValueError(f"the batch lacks column(s) {missing} of data.source {src.name}: not added")
    out = batch_dir(source, paths) / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{files[0].stem}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    new[columns].to_csv(tmp, index=False, lineterminator="\n")
    tmp.rename(out)
    return out
