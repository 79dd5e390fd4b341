"""Validation of an image set: row checks (quarantined with a reason), batch checks (stop the run), the image
suite (inferred once, then reviewed by people) and an aggregate profile.

The suite holds the label set, image shape, reference row count and required columns, never a path, pixel or
patient id. The profile holds counts and pixel statistics only: no image is ever drawn, as images are patient data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from medflow.data.checks import Check
from medflow.data.columns import ROW_ID
from medflow.data.images import ImageSet
from medflow.data.profile import shown
from medflow.data.suite import DATE_REGEX, roles
from medflow.params import DataParams, ValidateParams

NOTES = (
    "Inferred by medflow from reference images; review and edit by hand. A row whose image is missing, unreadable "
    "or not image_shape (H, W, C), or whose label or patient id is missing, is quarantined with a reason. A label "
    "outside `labels`, a manifest without one of `required_columns`, or no valid image stops the run. "
    "meta.medflow.columns records the column kinds used by the clean step; delete this file to infer it again."
)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX_ROWS = 2**24


def _shape(image: np.ndarray | None) -> list[int] | None:
    return None if image is None else list(image.shape)


def reference_shape(images: list | np.ndarray) -> list[int] | None:
    """The most common H x W x C; ties go to the shape seen first."""
    if isinstance(images, np.ndarray):
        return list(images.shape[1:]) if len(images) else None
    counts = Counter(tuple(s) for s in map(_shape, images) if s is not None)
    return list(counts.most_common(1)[0][0]) if counts else None


def content_digest(image: np.ndarray) -> bytes:
    """sha256 of the shape and the decoded pixels: the same picture saved as PNG or NPY hashes the same."""
    h = hashlib.sha256("x".join(map(str, image.shape)).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.digest()


def hex_column(digests: np.ndarray) -> pd.Series:
    """Digests (dtype S32) as the text column of their hex strings, spelt out in numpy and handed to Arrow without a
    copy: a Python str per row costs ~120 bytes, at 200,000 images 24 MB held until the rows are written. A chunk
    holds at most 2**24 rows, so that its offsets (int32) cannot overflow."""
    chunks = []
    for lo in range(0, max(len(digests), 1), _HEX_ROWS):
        raw = digests[lo : lo + _HEX_ROWS].view(np.uint8).reshape(-1, 32)
        text = np.empty((len(raw), 64), np.uint8)
        text[:, 0::2] = _HEX[raw >> 4]
        text[:, 1::2] = _HEX[raw & 15]
        offsets = np.arange(0, text.size + 1, 64, dtype=np.int32)
        chunks.append(pa.StringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(text)))
    return pa.chunked_array(chunks, pa.string()).to_pandas()


def column_kinds(table: pd.DataFrame, data: DataParams, vp: ValidateParams) -> dict[str, str]:
    """Roles from params; other manifest columns are categorical when they repeat enough, else free text."""
    role = roles(data) | {data.image_column: "image"}
    kinds = {}
    n = len(table)
    for col in table.columns.drop(ROW_ID):
        values = table[col].dropna().astype(str)
        dates = len(values) and values.str.contains(DATE_REGEX, regex=True).mean() >= vp.type_mostly
        repeats = len(values) and values.nunique() <= vp.free_text_ratio * n
        kinds[col] = role.get(col) or ("categorical" if repeats and not dates else "text")
    return kinds


def infer_image_suite(src: ImageSet, data: DataParams, vp: ValidateParams, name: str) -> dict:
    kinds = column_kinds(src.table, data, vp)
    return {
        "name": name,
        "kind": "image",
        "image_shape": reference_shape(src.images),
        "labels": sorted(src.table[data.target].dropna().astype(str).unique()),
        "required_columns": [c for c, k in kinds.items() if k in ("image", "target", "patient_id", "identifier")],
        "meta": {
            "medflow": {
                "source": src.where,
                "reference_rows": len(src.table),
                "columns": {c: {"kind": k} for c, k in kinds.items()},
            }
        },
        "notes": NOTES,
    }


def _row_check(type_: str, column: str, ids: list[int]) -> Check:
    return Check(type_, column, "row", not ids, False, len(ids), tuple(sorted(ids)), "", "")


def _fmt(shape: list[int] | None) -> str:
    return "x".join(map(str, shape)) if shape else "none"


def check_images(src: ImageSet, data: DataParams, suite: dict) -> tuple[list[Check], dict[int, str]]:
    """(checks, reason per quarantined ROW_ID). Row checks never stop the run; batch checks do, with counts."""
    table, col, target = src.table, data.image_column, data.target
    want = suite["image_shape"]
    problems: dict[int, list[str]] = {}
    by_rule: dict[tuple[str, str], list[int]] = {
        (col, "file_missing"): [],
        (col, "path_outside_data"): [],
        (col, "decode_failed"): [],
        (col, "wrong_shape"): [],
        (target, "label_missing"): [],
    }
    if data.patient_id:
        by_rule[(data.patient_id, "patient_id_missing")] = []

    def flag(rid: int, column: str, rule: str, detail: str = "") -> None:
        by_rule[(column, rule)].append(rid)
        problems.setdefault(rid, []).append(f"{column}: {rule}" + (f" ({detail})" if detail else ""))

    for rid, image in zip(table[ROW_ID].tolist(), src.images, strict=True):
        if rid in src.errors:
            flag(rid, col, *src.errors[rid])
        elif list(image.shape) != want:
            flag(rid, col, "wrong_shape", f"{_fmt(list(image.shape))}, expected {_fmt(want)}")
    for column, rule in ((target, "label_missing"), (data.patient_id, "patient_id_missing")):
        if column:
            for rid in table.loc[table[column].isna(), ROW_ID]:
                flag(int(rid), column, rule)
    checks = [_row_check(rule, column, ids) for (column, rule), ids in by_rule.items()]

    labels = table[target].dropna().astype(str)
    unseen = labels[~labels.isin(suite["labels"])].value_counts()
    n = int(unseen.sum())
    detail = (
        f"{n} of {len(labels)} rows have labels outside the suite's set: "
        + ", ".join(f"{v!r} ({c})" for v, c in unseen.items())
        + "; add them to `labels` in the suite if they are new classes"
    )
    checks.append(Check("label_in_suite_set", target, "batch", not n, bool(n), n, (), "", detail))
    none_valid = len(problems) == len(table)
    counts = ", ".join(f"{c.rule} {c.unexpected_count}" for c in checks if c.level == "row" and c.unexpected_count)
    detail = f"no valid image among {len(table)} rows ({counts or 'the source is empty'})"
    checks.append(Check("has_valid_image", None, "batch", not none_valid, none_valid, None, (), "", detail))
    return checks, {rid: "; ".join(reasons) for rid, reasons in problems.items()}


class PixelSums:
    """Per-channel sums of pixels and of their squares, added up a chunk of images at a time: exact in float64
    (uint8 squares summed stay below 2**53 up to ~1e11 pixels), so chunks give what the whole would."""

    def __init__(self, channels: int):
        self.images, self.pixels = 0, 0
        self.total, self.squares = np.zeros(channels), np.zeros(channels)

    def add(self, images: np.ndarray) -> None:
        flat = images.reshape(-1, images.shape[-1])
        self.images += len(images)
        self.pixels += len(flat)
        self.total += flat.sum(0, dtype=np.float64)
        self.squares += np.square(flat, dtype=np.uint16).sum(0, dtype=np.float64)


def image_profile(labels: pd.Series, sums: PixelSums, shape: list[int], target: str, vp: ValidateParams) -> dict:
    """Aggregates of the valid images: class balance (small counts suppressed), shape, per-channel mean/std."""
    k = vp.small_count
    mean = sums.total / max(sums.pixels, 1)
    std = np.sqrt(np.maximum(sums.squares / max(sums.pixels, 1) - mean**2, 0))
    channels = [
        {"channel": i, "mean": round(float(m), 2), "std": round(float(s), 2)}
        for i, (m, s) in enumerate(zip(mean, std, strict=True))
    ]
    return {
        "rows": sums.images,
        "small_count": k,
        "image_shape": list(shape),
        "channels": channels,
        "target": {
            "name": target,
            "counts": {str(v): shown(int(c), k) for v, c in labels.value_counts().sort_index().items()},
        },
    }


def profile_markdown(profile: dict, title: str) -> str:
    k, tgt = profile["small_count"], profile["target"]
    counts = {v.replace("|", r"\|"): c for v, c in tgt["counts"].items()}
    out = [
        f"# Image data profile: {title}",
        "",
        f"{profile['rows']} images of {_fmt(profile['image_shape'])} (H x W x C, uint8). Aggregates only: counts "
        f"below {k} are shown as <{k}, and no image is shown.",
        "",
        "## Pixels (0-255)",
        "",
        "| channel | mean | std |",
        "|---|---|---|",
        *(f"| {c['channel']} | {c['mean']} | {c['std']} |" for c in profile["channels"]),
        "",
        f"## Target: {tgt['name']}",
        "",
        "| value | rows |",
        "|---|---|",
        *(f"| {v} | {c} |" for v, c in counts.items()),
        "",
        "![target](target.png)",
        "",
    ]
    return "\n".join(out)


def save_profile_figures(profile: dict, folder: Path) -> None:
    for name, fig in profile_figures(profile).items():
        fig.savefig(folder / name, dpi=80)


def profile_figures(profile: dict) -> dict:
    """{file name: matplotlib Figure}: the class balance only."""
    from matplotlib.figure import Figure

    tgt = profile["target"]
    fig = Figure(figsize=(max(4, 0.5 * len(tgt["counts"]) + 1), 3), layout="constrained")
    ax = fig.add_subplot()
    heights = [int(v) if v.isdigit() else 0 for v in tgt["counts"].values()]
    ax.bar(list(tgt["counts"]), heights)
    ax.bar_label(ax.containers[0], labels=list(tgt["counts"].values()))
    ax.tick_params(axis="x", labelrotation=45 if len(tgt["counts"]) > 6 else 0)
    ax.margins(y=0.12)
    ax.set_title(f"{tgt['name']} (rows)")
    return {"target.png": fig}
