"""Where raw tables come from: CSV/Parquet files, or built-in demos written under data/ on first use.

Tables are read with every column as text so that nothing is lost before validation decides types
(leading zeros in record numbers, "n/a" markers, a stray letter in a numeric column).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from medflow.paths import Paths

# Written as markers by hospital exports; read as missing.
NA_VALUES = ["", "NA", "N/A", "n/a", "na", "NaN", "nan", "NULL", "null", "None", "none", "-", "?"]


class SourceError(ValueError):
    pass


def _breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    ds = load_breast_cancer(as_frame=True)
    df = ds.frame.drop(columns="target")
    df["diagnosis"] = [ds.target_names[t] for t in ds.target]
    return df


def _synthetic_cohort() -> pd.DataFrame:
    from medflow.data.synthetic import synthetic_cohort

    return synthetic_cohort()


# The table data.dvc records in a fresh clone (written on first use, as the clone has no DVC remote).
RECORDED_DEMO = "breast_cancer"

DEMOS: dict[str, Callable[[], pd.DataFrame]] = {
    "breast_cancer": _breast_cancer,
    "synthetic_cohort": _synthetic_cohort,
}


def materialise_demo(name: str, data_dir: Path) -> Path:
    """Writes a demo table byte-for-byte the same on every machine, so that it hashes to what data.dvc records."""
    if name not in DEMOS:
        raise SourceError(f"unknown demo {name!r}; built-in demos: {', '.join(sorted(DEMOS))}")
    out = data_dir / f"{name}.csv"
    if out.exists():
        return out
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    DEMOS[name]().to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(out)
    return out


def resolve(source: str, paths: Paths) -> Path:
    """A demo name becomes its file under data/ (written if missing); anything else is a path."""
    if source in DEMOS:
        return materialise_demo(source, paths.data_dir)
    path = paths.source(source)
    if not path.exists():
        stem = Path(source).stem
        if stem in DEMOS and path.parent == paths.data_dir:
            return materialise_demo(stem, paths.data_dir)
        raise SourceError(f"{path}: data source not found (data.source={source!r})")
    return path


def dataset_name(source: str) -> str:
    return source if source in DEMOS else Path(source).stem


def read_table(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith(".parquet") or suffix.endswith(".pq"):
            df = pd.read_parquet(path)
            df = df.astype(object).where(df.notna(), None).astype("string").astype(object)
        elif suffix.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            sep = "\t" if ".tsv" in suffix else ","
            df = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, na_values=NA_VALUES, skipinitialspace=True
            )
        else:
            raise SourceError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv or .parquet")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise SourceError(f"{path}: cannot be read as a table: {exc}") from None
    if df.columns.duplicated().any():
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise SourceError(f"{path}: duplicated column names {dup}")
    df.columns = [str(c).strip() for c in df.columns]
    return df
