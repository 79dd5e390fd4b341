"""Batch scoring of a file: every input row comes back once, scored or refused with its reason.

The checks are the bundle's own (bundle.py), which the registered pyfunc runs too, so `medflow predict`,
`mlflow.pyfunc` and `mlflow models serve` refuse the same rows. Messages name columns, files and counts, never an
input value.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medflow.models.bundle import BatchRejected


def read_batch(path: Path) -> pd.DataFrame:
    """Every cell as the text the file holds: the row checks, not the reader, decide what a number is."""
    if not path.is_file():
        raise BatchRejected(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path).astype(object)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception:  # noqa: BLE001 - a parser's message can quote the file's content
        raise BatchRejected(f"{path}: not a readable CSV or Parquet table") from None


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)  # a reader never sees half a file, and a refused batch leaves none
    finally:
        tmp.unlink(missing_ok=True)


def write_scored(scored: pd.DataFrame, name: str, version: str, output_path: Path, classes: bool = True) -> dict:
    """Writes Predictor.score's table, labelled with the model that scored it, to output_path; returns counts. A
    classifier's prediction is written as `label`; a regression's stays `prediction`, a number in the target's units."""
    scored.insert(1, "model", name)
    scored.insert(2, "version", version)
    write_atomic(scored.rename(columns={"prediction": "label"}) if classes else scored, Path(output_path))
    ok = int(scored["status"].eq("ok").sum())
    return {"model": name, "version": version, "rows": len(scored), "ok": ok, "refused": len(scored) - ok}
