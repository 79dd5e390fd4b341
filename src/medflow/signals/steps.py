"""validate for data.kind=signals: reads the manifest (data.source) and each record it lists; writes
artifacts/validate/ as the event kind does (valid.parquet: row id, salted patient key, label and each lead's summary
features; sequences.npy: [records, samples, leads], standardised per lead; columns.json; quarantine.csv: row id and
reason; summary.json: counts only). Every manifest row ends in valid.parquet or quarantine.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.columns import PATIENT_KEY, ROW_ID
from medflow.data.sources import SourceError, inside
from medflow.data.suite import ValidationFailed
from medflow.params import Params, SignalParams
from medflow.paths import Paths
from medflow.privacy.keys import DEMO_SALT, pseudonymise, resolve_salt
from medflow.sequences.steps import GRID
from medflow.signals import synthetic
from medflow.signals.read import read_record

UNREADABLE = "not a readable DICOM Waveform or WFDB record"


def manifest_file(params: Params, paths: Paths) -> Path:
    if params.data.source == synthetic.NAME:
        return synthetic.materialise(paths.data_dir)
    path = paths.source(params.data.source)
    if not path.is_file():
        raise SourceError(f"{path}: data.source not found (a manifest of signal files)")
    return path


def read_all(rows: pd.DataFrame, folder: Path, sp: SignalParams, inside_project) -> tuple[list, list, list, list]:
    """(arrays, features, reasons) per manifest row, an array and its features None where the reason is not "", and
    the leads read (data.signals.leads, or the first readable record's)."""
    from medflow.signals.read import prepare

    leads = list(sp.leads)
    arrays, features, reasons = [], [], []
    for name in rows[sp.path_column].fillna("").astype(str):
        path = folder / name.strip() if name.strip() else None
        if path is None or not inside_project(path):
            arrays.append(None), features.append(None), reasons.append(f"{sp.path_column}: missing or outside data/")
            continue
        try:
            record = read_record(path)
        except Exception:  # noqa: BLE001 - a reader's message may quote the file; the reason names the rule
            arrays.append(None), features.append(None), reasons.append(UNREADABLE)
            continue
        leads = leads or list(record.leads)  # the first readable record's, when params name none
        z, f, why = prepare(record, leads, sp.rate_hz, sp.seconds, sp.flat_std)
        arrays.append(z), features.append(f), reasons.append(why)
    return arrays, features, reasons, leads


def validate(params: Params, paths: Paths) -> dict:
    data, sp, vp = params.data, params.data.signals, params.validate_
    manifest = manifest_file(params, paths)
    where = str(manifest.relative_to(paths.root))
    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    needed = [c for c in (sp.path_column, data.target, data.patient_id) if c]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValidationFailed(f"{where}: lacks column(s) {missing} (data.signals.path_column, data.target, ...)")
    salt = DEMO_SALT if data.source == synthetic.NAME and data.patient_id else resolve_salt(params)
    arrays, features, reasons, leads = read_all(
        rows, manifest.parent, sp, lambda p: inside(p, paths, data.allowed_roots)
    )
    reason = np.asarray(reasons, dtype=object)
    reason[(reason == "") & rows[data.target].str.strip().eq("").to_numpy()] = f"{data.target}: missing"
    ok = reason == ""
    if (~ok).sum() > vp.max_quarantine * len(rows):
        counts = pd.Series(reason[~ok]).value_counts().to_dict()
        raise ValidationFailed(
            f"{where}: {int((~ok).sum())} of {len(rows)} records quarantined (rule: at most validate.max_quarantine="
            f"{vp.max_quarantine:g}): {counts}"
        )
    keep = np.flatnonzero(ok)
    valid = pd.DataFrame({ROW_ID: keep.astype("int64")})
    if data.patient_id:
        valid[PATIENT_KEY] = pseudonymise(rows[data.patient_id].iloc[keep], salt or "").to_numpy()
    valid[data.target] = rows[data.target].iloc[keep].str.strip().to_numpy(dtype=object)
    summaries = pd.DataFrame([features[i] for i in keep])
    valid = pd.concat([valid, summaries], axis=1)
    out = paths.step_dir("validate")
    n = int(round(sp.rate_hz * sp.seconds))
    grid = np.stack([arrays[i] for i in keep]) if len(keep) else np.empty((0, n, len(leads)), np.float32)
    valid.to_parquet(paths.valid_rows, index=False)
    np.save(out / GRID, grid)
    kinds = {data.target: "target"} | ({data.patient_id: "patient_id"} if data.patient_id else {})
    kinds |= {c: "numeric" for c in summaries.columns}
    (out / "columns.json").write_text(json.dumps(kinds, indent=2) + "\n")
    pd.DataFrame({"row_id": np.flatnonzero(~ok), "reason": reason[~ok]}).to_csv(
        out / "quarantine.csv", index=False, lineterminator="\n"
    )
    summary = {
        "kind": "signals",
        "source": where,
        "rows_in": len(rows),
        "rows_valid": len(keep),
        "rows_quarantined": int((~ok).sum()),
        "quarantined_by_reason": {str(k): int(v) for k, v in pd.Series(reason[~ok]).value_counts().items()},
        "variables": leads,
        "grid": list(grid.shape),
        "rate_hz": sp.rate_hz,
        "seconds": sp.seconds,
        # The grid's geometry as the event kind records it: the window is the record, a bin one sample.
        "window_hours": sp.seconds / 3600,
        "bin_hours": 1 / sp.rate_hz / 3600,
        "horizon_hours": 0.0,
    }
    paths.summary("validate").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
