"""validate for data.kind=events, and the grid (or signals' array, medflow.signals) as clean and the steps after it
keep it.

validate writes artifacts/validate/: valid.parquet (one row per valid label row: row id, salted patient key,
outcome and the window aggregates), sequences.npy (the raw grid, [rows, bins, variables], canonical units),
columns.json, quarantine.csv (label rows: row id, reason), quarantine_events.csv (event row, reason) and
summary.json (counts only). clean keeps the grid's rows of the label rows it keeps (keep_grid).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medflow.data.columns import PATIENT_KEY, ROW_ID
from medflow.data.suite import ValidationFailed
from medflow.params import Params
from medflow.paths import Paths
from medflow.privacy.keys import DEMO_SALT, pseudonymise, resolve_salt
from medflow.sequences import cohort, events, grid

GRID = "sequences.npy"


def _salt(params: Params) -> str | None:
    if params.data.patient_id and params.data.source == cohort.NAME:
        return DEMO_SALT
    return resolve_salt(params)


def validate(params: Params, paths: Paths) -> dict:
    data, ep, vp = params.data, params.data.events, params.validate_
    events_file, labels_file = events.files(data, paths)
    where = (str(events_file.relative_to(paths.root)), str(labels_file.relative_to(paths.root)))
    keep = [c for c in (data.patient_id, ep.stay_id) if c]
    raw_events = events.read(events_file, [*keep, ep.time, ep.code, ep.value, ep.unit], "data.events")
    raw_labels = events.read(labels_file, [*keep, ep.prediction_time, data.target], "data.events, data.target")
    salt = _salt(params)  # before any output: a missing salt stops the run with nothing written
    checked = events.check(raw_events, raw_labels, data, where)
    held_share = len(checked.held_labels) / max(len(raw_labels), 1)
    if held_share > vp.max_quarantine:
        raise ValidationFailed(
            f"{where[1]}: {len(checked.held_labels)} of {len(raw_labels)} label rows quarantined (rule: at most "
            f"validate.max_quarantine={vp.max_quarantine:g}); see the reasons in a run with a higher limit"
        )
    faults = sum(c for r, c in checked.counts["events_by_reason"].items() if r not in (events.BEFORE, events.AFTER))
    if faults > vp.max_quarantine * len(raw_events):
        raise ValidationFailed(
            f"{where[0]}: {faults} of {len(raw_events)} events quarantined for faults (rule: at most "
            f"validate.max_quarantine={vp.max_quarantine:g}): {checked.counts['events_by_reason']}"
        )
    n = len(checked.labels)
    args = (checked.stay, checked.hour, checked.variable, checked.value)
    raw_grid = grid.build(*args, n, len(checked.variables), ep.window_hours, ep.bin_hours, ep.chunk_stays)
    aggs = grid.aggregates(*args, n, checked.variables)
    valid = pd.DataFrame({ROW_ID: checked.labels[ROW_ID].to_numpy(dtype="int64")})
    if data.patient_id:
        valid[PATIENT_KEY] = pseudonymise(checked.labels[data.patient_id], salt or "").to_numpy()
    valid[data.target] = checked.labels[data.target].str.strip().to_numpy(dtype=object)
    valid = pd.concat([valid, aggs], axis=1)
    out = paths.step_dir("validate")
    valid.to_parquet(paths.valid_rows, index=False)
    np.save(out / GRID, raw_grid)
    kinds = {data.target: "target"} | ({data.patient_id: "patient_id"} if data.patient_id else {})
    kinds |= {c: "numeric" for c in aggs.columns}
    (out / "columns.json").write_text(json.dumps(kinds, indent=2) + "\n")
    checked.held_labels.to_csv(out / "quarantine.csv", index=False, lineterminator="\n")
    checked.held_events.to_csv(out / "quarantine_events.csv", index=False, lineterminator="\n")
    summary = {
        "kind": "events",
        "source": where[0],
        "labels": where[1],
        "rows_in": len(raw_labels),
        "rows_valid": n,
        "rows_quarantined": len(checked.held_labels),
        **checked.counts,
        "variables": checked.variables,
        "grid": list(raw_grid.shape),
        "window_hours": ep.window_hours,
        "bin_hours": ep.bin_hours,
        "horizon_hours": ep.horizon_hours,
    }
    assert summary["events_in"] == summary["events_on_grid"] + summary["events_quarantined"]
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    paths.summary("validate").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def keep_grid(paths: Paths, rows: np.ndarray) -> None:
    """clean's grid: validate's rows at the positions of the rows clean keeps, in their order."""
    raw = np.load(paths.step_dir("validate") / GRID, mmap_mode="r")
    np.save(paths.step_dir("clean") / GRID, np.ascontiguousarray(raw[rows]))


def grid_of(paths: Paths) -> np.ndarray:
    """The cleaned rows' raw grid, memory-mapped: row i of cleaned.parquet is grid i."""
    return np.load(paths.step_dir("clean") / GRID, mmap_mode="r")


def card_section(params: Params, paths: Paths) -> dict:
    """What the model card says of an event model: window, horizon, grid, variables and event counts."""
    ep = params.data.events
    summary = json.loads(paths.summary("validate").read_text())
    counts = {"in the table": summary["events_in"], "on the grid": summary["events_on_grid"]}
    # By reason in the validate step's summary: the card stays within what MLflow's description holds.
    counts["quarantined"] = summary["events_quarantined"]
    counts["converted to the canonical unit"] = sum(summary["unit_conversions"].values())
    return {
        "window_hours": ep.window_hours,
        "horizon_hours": ep.horizon_hours,
        "bin_hours": ep.bin_hours,
        "bins": grid.n_bins(ep.window_hours, ep.bin_hours),
        "variables": {v: next(iter(units)) for v, units in ep.units.items()},
        "events": counts,
    }


def normaliser(paths: Paths, train_rows: np.ndarray, params: Params | None = None) -> grid.SequenceNormaliser:
    """The grid's normalisation fitted on the training split's rows (positions in the cleaned table); params give the
    event settings a bundle keeps for predict (tuning trials, which save no bundle, pass none)."""
    summary = json.loads(paths.summary("validate").read_text())
    signal = summary["kind"] == "signals"
    ep = (params.data.signals if signal else params.data.events) if params else None
    pre = grid.SequenceNormaliser(
        summary["variables"],
        summary["window_hours"],
        summary["bin_hours"],
        summary["horizon_hours"],
        settings=ep.model_dump(mode="json") if ep else {},
        patient_id=params.data.patient_id if params else None,
        signal=signal,
    )
    return pre.fit(grid_of(paths)[np.sort(train_rows)])
