"""Where raw tables come from: CSV/Parquet files, or built-in demos written under data/ on first use.

Tables are read with every column as text so that nothing is lost before validation decides types
(leading zeros in record numbers, "n/a" markers, a stray letter in a numeric column).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from medflow.paths import Paths

if TYPE_CHECKING:
    import pandas as pd

# Written for "no value" by people and exports alike: read as missing, never as a failed number (scoring too).
NA_VALUES = ["", "NA", "N/A", "n/a", "na", "NaN", "nan", "NULL", "null", "None", "none", "-", "?"]


class SourceError(ValueError):
    pass


def _breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    ds = load_breast_cancer(as_frame=True)
    df = ds.frame.drop(columns="target")
    df["diagnosis"] = [ds.target_names[t] for t in ds.target]
    return df


def _diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes table in its original units: disease progression one year on (a number) from age,
    sex, BMI, blood pressure and six serum measurements."""
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})


def _synthetic_cohort() -> pd.DataFrame:
    from medflow.data.synthetic import synthetic_cohort

    return synthetic_cohort()


def _survival_table(features: pd.DataFrame, outcome) -> pd.DataFrame:
    """A survival package's features and its (event, time) record as one table, both columns named as the package
    names them: the event as 1/0, whole-number times as integers (days, weeks) rather than "2178.0"."""
    import numpy as np

    df = features.copy()
    event, time = outcome.dtype.names
    df[event] = outcome[event].astype(int)
    t = outcome[time]
    df[time] = t.astype(int) if np.array_equal(t, np.round(t)) else t
    return df


def _sksurv(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sksurv import datasets

        return _survival_table(*getattr(datasets, f"load_{name}")())

    return load


def _rossi() -> pd.DataFrame:
    from lifelines.datasets import load_rossi

    return load_rossi()


def _lung() -> pd.DataFrame:
    """The North Central Cancer Treatment Group's advanced lung cancer trial (228 patients, lifelines' copy of R's
    survival::lung): days to death (status 1) or censoring (0), the institution each patient was enrolled at (inst,
    18 of them; one row without) and performance scores, calories and weight loss. Institutions are whole-number
    codes, written as such ("3", not "3.0"): the site column of split.by=site."""
    from lifelines.datasets import load_lung

    df = load_lung()
    df["inst"] = df["inst"].astype("Int64")
    return df


# The table data.dvc records in a fresh clone (written on first use, as the clone has no DVC remote).
RECORDED_DEMO = "breast_cancer"

DEMOS: dict[str, Callable[[], pd.DataFrame]] = {
    "breast_cancer": _breast_cancer,
    "diabetes": _diabetes,
    "synthetic_cohort": _synthetic_cohort,
    # Time-to-event tables, as scikit-survival and lifelines ship them (time and event columns named as there).
    "whas500": _sksurv("whas500"),  # Worcester Heart Attack Study: lenfol (days), fstat
    "gbsg2": _sksurv("gbsg2"),  # German Breast Cancer Study Group 2: time (days), cens
    "veterans": _sksurv("veterans_lung_cancer"),  # VA lung cancer trial: Survival_in_days, Status
    "aids": _sksurv("aids"),  # AIDS Clinical Trials Group 320: time (days), censor
    "flchain": _sksurv("flchain"),  # Olmsted County serum free light chains: futime (days), death; sample.yr
    "rossi": _rossi,  # recidivism after release from prison: week, arrest
    "lung": _lung,  # NCCTG advanced lung cancer, 18 institutions (inst): time (days), status
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


def inside(path: Path, paths: Paths, allowed_roots: Iterable[str] = ()) -> bool:
    """Whether path, links followed, lies in the project's data folder or one of the allowed roots."""
    real = path.resolve()
    roots = [paths.data_dir, *(paths.source(r) for r in allowed_roots)]
    return any(real.is_relative_to(r.resolve()) for r in roots)


def resolve(source: str, paths: Paths, allowed_roots: Iterable[str] = ()) -> Path:
    """A demo name becomes its file under data/ (written if missing); anything else is a path that must stay, links
    followed, inside data/ or data.allowed_roots: a source is read whole, so it must be one the project owns."""
    if source in DEMOS:
        return materialise_demo(source, paths.data_dir)
    path = paths.source(source)
    if not path.exists():
        stem = Path(source).stem
        if stem in DEMOS and path.parent == paths.data_dir:
            return materialise_demo(stem, paths.data_dir)
        raise SourceError(f"{path}: data source not found (data.source={source!r})")
    if not inside(path, paths, allowed_roots):
        how = "is a link that leads" if path.is_symlink() or path.resolve() != path.absolute() else "lies"
        raise SourceError(
            f"{source}: data.source {how} outside the project's data folder: move the file under data/ "
            "or add its folder to data.allowed_roots"
        )
    if path.is_dir():
        raise SourceError(f"{source}: data.source is a folder; point it at a .csv, .tsv or .parquet file")
    return path


def batch_dir(source: str, paths: Paths) -> Path:
    """Where `medflow monitor --update` adds labelled batches to data.source, one new file each: data/ is never
    edited in place, and validate reads them after the source."""
    return paths.data_dir / "batches" / dataset_name(source)


def source_files(source: str, paths: Paths, allowed_roots: Iterable[str] = ()) -> list[Path]:
    """The files validate reads for data.source: the source, then the batches added to it, oldest first."""
    return [resolve(source, paths, allowed_roots), *sorted(batch_dir(source, paths).glob("*.csv"))]


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_name(source: str) -> str:
    return source if source in DEMOS else Path(source).stem


_DELIMITERS = (",", ";", "\t", "|")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip


def sniff_encoding(head: bytes) -> str:
    """A byte-order mark names the encoding; NUL bytes in the first line mean UTF-16 without one; else UTF-8."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    first = head.split(b"\n", 1)[0]
    if first.count(b"\x00") * 3 >= len(first) > 1:
        return "utf-16-le" if first[1:2] == b"\x00" else "utf-16-be"
    return "utf-8"


def _fields(lines: list[str], delimiter: str) -> list[int]:
    return [len(row) for row in csv.reader(lines, delimiter=delimiter) if row]


def sniff_delimiter(text: str, suffix: str) -> str:
    """The delimiter that splits the first lines into the same number (> 1) of fields most often."""
    lines = text.splitlines()[:50]
    best, score = "\t" if ".tsv" in suffix else ",", (0.0, 0)
    for d in _DELIMITERS:
        counts = _fields(lines, d)
        if not counts or counts[0] < 2:
            continue
        s = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if s > score:
            best, score = d, s
    return best


def _name(d: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(d, repr(d))


def _csv_options(path: Path, exclude: Iterable[str], delimiter: str | None, encoding: str | None) -> dict:
    """pandas.read_csv arguments for path (gzipped when it ends in .gz), once its encoding, delimiter and header
    have been checked."""
    suffix = "".join(path.suffixes[-2:]).lower()

    def raw():
        return gzip.open(path, "rb") if suffix.endswith(".gz") else path.open("rb")

    try:
        with raw() as f:
            head = f.read(65536)
    except (OSError, EOFError) as exc:  # gzip: not gzipped, or cut short within its first block
        if not suffix.endswith(".gz"):
            raise
        raise SourceError(f"{path}: not a readable gzip file ({type(exc).__name__}); compress it again") from None
    if not head.strip():
        raise SourceError(f"{path}: empty file (0 rows, no header)")
    enc = encoding or sniff_encoding(head)
    guessed = "data.encoding" if encoding else "sniffed"
    try:
        text = head.decode(enc, errors="strict") if len(head) < 65536 else head.decode(enc, errors="ignore")
        with io.TextIOWrapper(raw(), encoding=enc, newline="") as f:
            for _ in f:
                pass
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path}: not readable as {enc} ({guessed}): byte {exc.start} of a block is invalid; set data.encoding "
            "to the file's encoding (e.g. latin-1, cp1252, utf-16)"
        ) from None
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {enc!r} (data.encoding)") from None
    except (OSError, EOFError) as exc:  # gzip: not gzipped, or cut short
        raise SourceError(f"{path}: not a readable gzip file ({type(exc).__name__}); compress it again") from None
    sep = delimiter or sniff_delimiter(text, suffix)
    header = next(csv.reader(text.splitlines()[:1], delimiter=sep), [])
    others = {d: len(next(csv.reader(text.splitlines()[:1], delimiter=d), [])) for d in _DELIMITERS if d != sep}
    wider = max(others, key=others.get)
    if len(header) < 2 and others[wider] >= 2:
        how = "data.delimiter" if delimiter else "the sniffed delimiter"
        raise SourceError(
            f"{path}: {how} {_name(sep)} splits the header into 1 column, {_name(wider)} into {others[wider]}: "
            f"set data.delimiter to the file's delimiter"
        )
    names = [h.strip() or f"Unnamed: {i}" for i, h in enumerate(header)]  # pandas' name for a column with none
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SourceError(
            f"{path}: duplicated column name(s) {dup} in the header ({len(names) - len(set(names))} repeat(s)); "
            "rename them in the file"
        )
    _known(path, set(exclude), names)
    return {"sep": sep, "encoding": enc, "dtype": str, "keep_default_na": False, "na_values": NA_VALUES,
            "skipinitialspace": True}  # fmt: skip


def _parsing(path: Path, sep: str, read: Callable[[], object]):
    """read() with the parser's failures as one SourceError naming the file; its message can quote a line of the
    file, so only its location is kept."""
    import pandas as pd  # here, not at the top: `medflow run` with nothing to do never reads a table

    try:
        return read()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        where = re.findall(r"(line \d+|row \d+|Expected \d+ fields|saw \d+)", str(exc))
        raise SourceError(
            f"{path}: cannot be parsed as {_name(sep)}-delimited text ({', '.join(where) or type(exc).__name__}); "
            "check data.delimiter and quoting"
        ) from None
    except pd.errors.EmptyDataError:
        raise SourceError(f"{path}: empty file (0 rows, no header)") from None


def _known(path: Path, exclude: set[str], names: list[str]) -> None:
    # A misspelt exclusion would let the very column it meant to keep out through.
    unknown = sorted(exclude - set(names))
    if unknown:
        raise SourceError(f"{path}: data.exclude names column(s) {unknown} that are not in the file's header")


def _parquet_columns(path: Path, exclude: Iterable[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    # Names as every other reader sees them (stripped), for data.exclude and the duplicate check alike.
    names = [str(n).strip() for n in schema.names]
    _known(path, set(exclude), names)
    kept = [(f, n) for f, n in zip(schema, names, strict=True) if n not in set(exclude)]
    keep = [f.name for f, _ in kept]
    nested = [n for f, n in kept if pa.types.is_nested(f.type)]
    if nested:
        raise SourceError(
            f"{path}: column(s) {nested} hold nested values (lists/structs/maps), which no suite can check: "
            "flatten them into plain columns or list them in data.exclude"
        )
    stripped = [n for _, n in kept]
    dup = sorted({n for n in stripped if stripped.count(n) > 1})
    if dup:
        raise SourceError(f"{path}: duplicated column name(s) {dup}; rename them in the file")
    return keep


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet values as text. Read with integer_object_nulls: an integer column holding a null would otherwise
    turn float in that frame only ("1.0" in one chunk, "1" in the next: two patients, or two labels, of one)."""
    return df.astype(object).where(df.notna(), None).astype("string").astype(object)


def _parquet(path: Path, read: Callable[[], object]):
    import pyarrow as pa

    try:
        return read()
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({type(exc).__name__}); re-export it") from None


def _kind(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.is_dir():
        raise SourceError(f"{path}: is a folder, not a table")
    if suffix.endswith((".parquet", ".pq")):
        return "parquet"
    if suffix.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
        return "csv"
    raise SourceError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv or .parquet")


def _named(df: pd.DataFrame, exclude: Iterable[str]) -> pd.DataFrame:
    """Header names stripped, excluded columns dropped as they are read. Dropped after parsing, not skipped by
    read_csv's usecols: with usecols pandas no longer checks field counts, and a row with an unquoted delimiter
    would shift silently into the wrong columns."""
    df.columns = [str(c).strip() or f"Unnamed: {i}" for i, c in enumerate(df.columns)]
    drop = set(exclude)
    return df.drop(columns=[c for c in df.columns if c in drop]) if drop else df


def read_table(
    path: Path, exclude: Iterable[str] = (), delimiter: str | None = None, encoding: str | None = None
) -> pd.DataFrame:
    """Every column as text. CSV delimiter and encoding are sniffed unless given; columns in exclude are dropped
    as they are read. Fails (SourceError) naming the file and the rule: duplicated or nested columns, a wrong
    delimiter or encoding, an unsupported file type."""
    import pandas as pd

    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        keep = _parquet(path, lambda: _parquet_columns(path, exclude))
        table = _parquet(path, lambda: pq.read_table(path, columns=keep))
        return _named(_as_text(table.to_pandas(integer_object_nulls=True)), ())
    opts = _csv_options(path, exclude, delimiter, encoding)
    return _named(_parsing(path, opts["sep"], lambda: pd.read_csv(path, **opts)), exclude)


def read_tables(
    files: list[Path], exclude: Iterable[str] = (), delimiter: str | None = None, encoding: str | None = None
) -> pd.DataFrame:
    """read_table of the source (files[0]) and of the batches added to it (medflow wrote them: sniffed), as one table
    in the source's column order, rows numbered on across files."""
    import pandas as pd

    first = read_table(files[0], exclude, delimiter, encoding)
    rest = [_same_columns(f, read_table(f, exclude), first.columns, files[0]) for f in files[1:]]
    return pd.concat([first, *rest], ignore_index=True) if rest else first


def _same_columns(path: Path, frame: pd.DataFrame, columns, source: Path) -> pd.DataFrame:
    if set(frame.columns) != set(columns):
        raise SourceError(
            f"{path}: its columns differ from those of data.source {source.name} "
            f"({sorted(set(frame.columns) ^ set(columns))}): move it out of {path.parent}"
        )
    return frame[list(columns)]


def read_chunks_of(
    files: list[Path], rows: int, exclude: Iterable[str] = (), delimiter: str | None = None, encoding: str | None = None
) -> Iterator[pd.DataFrame]:
    """read_chunks of the source and then of the batches added to it, as read_tables reads them whole."""
    start, columns = 0, None
    for i, path in enumerate(files):
        how = (delimiter, encoding) if i == 0 else (None, None)
        read = 0
        for frame in read_chunks(path, rows, exclude, *how):
            columns = frame.columns if columns is None else columns
            frame = _same_columns(path, frame, columns, files[0])
            frame.index += start
            read += len(frame)
            yield frame
        start += read


def read_chunks(
    path: Path, rows: int, exclude: Iterable[str] = (), delimiter: str | None = None, encoding: str | None = None
) -> Iterator[pd.DataFrame]:
    """read_table in frames of at most `rows` rows, in file order (index 0..), with the same checks and errors:
    a table larger than memory is read one frame at a time."""
    import pandas as pd

    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        keep = _parquet(path, lambda: _parquet_columns(path, exclude))
        batches = _parquet(path, lambda: pq.ParquetFile(path).iter_batches(batch_size=rows, columns=keep))

        def step():
            batch = _parquet(path, lambda: next(batches, None))
            return None if batch is None else _as_text(batch.to_pandas(integer_object_nulls=True))
    else:
        opts = _csv_options(path, exclude, delimiter, encoding)
        sep = opts["sep"]
        frames = _parsing(path, sep, lambda: pd.read_csv(path, chunksize=rows, **opts))

        def step():
            return _parsing(path, sep, lambda: next(frames, None))

    start = 0
    while (frame := step()) is not None:
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield _named(frame, exclude)
