"""Batch scoring with a registered model: every input row comes back once, scored or refused with its reason.

The checks are the registered pyfunc's own (models/bundle.py), so this file, `mlflow.pyfunc` and
`mlflow models serve` refuse the same rows. Messages name columns, files and counts, never an input value.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from medflow.models.bundle import BatchRejected
from medflow.tracking.integrity import verified_copy
from medflow.tracking.registry import resolve


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


def predict_file(model_uri: str, input_path: Path, output_path: Path) -> dict:
    """Scores input_path with the model and writes output_path; returns counts. Raises BatchRejected, writing
    nothing, when the batch as a whole cannot be scored."""
    import mlflow.pyfunc

    name, version = resolve(model_uri)
    batch = read_batch(Path(input_path))
    # The copy that was checked is the copy loaded; its code stays importable while the batch is scored.
    with tempfile.TemporaryDirectory() as tmp:
        model = mlflow.pyfunc.load_model(str(verified_copy(name, version.version, version.tags, Path(tmp))))
        scored = model.unwrap_python_model().predictor.score(batch)
    scored.insert(1, "model", name)
    scored.insert(2, "version", version.version)
    write_atomic(scored.rename(columns={"prediction": "label"}), Path(output_path))
    ok = int(scored["status"].eq("ok").sum())
    return {"model": name, "version": version.version, "rows": len(scored), "ok": ok, "refused": len(scored) - ok}
