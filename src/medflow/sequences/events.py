"""Reading and validating an event table and its label table (data.kind=events).

Every event row ends on the grid or in quarantine_events.csv with its reason; every label row in valid.parquet or
quarantine.csv. Times leave as hours since the stay's first event: no date reaches an artifact. An event charted
after its stay's prediction time is leakage: it stops the run, naming the variable and how many, unless
data.events.after_prediction is drop (then it is quarantined with that reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.data.columns import ROW_ID
from medflow.data.sources import SourceError, inside
from medflow.data.suite import ValidationFailed
from medflow.params import DataParams, EventParams
from medflow.paths import Paths
from medflow.privacy.classify import suspect_by_values
from medflow.sequences import cohort

NO_LABEL = "stay has no valid label row"
BEFORE = "before the observation window (data.events.window_hours)"
AFTER = "after the stay's prediction time (leakage; data.events.after_prediction=drop)"


def files(data: DataParams, paths: Paths) -> tuple[Path, Path]:
    """The event and label files: the built-in cohort is written under data/ on first use."""
    ep = data.events
    if data.source == cohort.NAME:
        written = cohort.materialise(paths.data_dir)
        return written[0], paths.source(ep.labels) if ep.labels else written[1]
    if ep.labels is None:
        raise SourceError("data.events.labels: name the label table (stay id, prediction time, outcome) of the events")
    found = []
    for key, name in (("data.source", data.source), ("data.events.labels", ep.labels)):
        path = paths.source(name)
        if not path.is_file():
            raise SourceError(f"{path}: {key} not found")
        if not inside(path, paths, data.allowed_roots):
            raise SourceError(f"{name}: {key} lies outside the project's data folder (or data.allowed_roots)")
        found.append(path)
    return found[0], found[1]


def read(path: Path, columns: list[str], key: str) -> pd.DataFrame:
    """The named columns as text (a missing one stops in one line); any other column is never read."""
    head = pd.read_parquet(path).columns if path.suffix == ".parquet" else pd.read_csv(path, nrows=0).columns
    missing = [c for c in dict.fromkeys(columns) if c not in head]
    if missing:
        raise ValidationFailed(f"{path.name}: lacks column(s) {missing} ({key})")
    if path.suffix == ".parquet":
        return pd.read_parquet(path, columns=list(dict.fromkeys(columns))).astype("string")
    return pd.read_csv(path, usecols=list(dict.fromkeys(columns)), dtype="string", keep_default_na=False)


def hours_since(times: pd.Series) -> np.ndarray:
    """Seconds since the epoch as float hours (NaN where the text is no time); never stored."""
    parsed = pd.to_datetime(times.str.strip(), errors="coerce", format="ISO8601", utc=True)
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype("int64").astype("float64")
    ns[parsed.isna().to_numpy()] = np.nan
    return ns / 3.6e12


def screen_text(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    """Free text where codes and numbers belong is screened as every table's columns are (privacy.classify)."""
    for col in columns:
        text = frame[col][pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].ne("")]
        found = suspect_by_values(col, text) if len(text) else None
        if found is not None:
            raise ValidationFailed(
                f"{where}: {found} (rule: no identifier in an event table); remove them from the export"
            )


@dataclass
class Checked:
    """Validated label rows (one per stay, in valid.parquet's order) and in-window events keyed to them."""

    labels: pd.DataFrame  # valid label rows: their row ids, patient ids and targets
    held_labels: pd.DataFrame  # row id, reason
    stay: np.ndarray  # each in-window event's position among the valid label rows
    hour: np.ndarray  # hours since the window opened (0..window_hours)
    variable: np.ndarray  # index into variables
    value: np.ndarray  # canonical unit
    variables: list[str]
    held_events: pd.DataFrame  # event row, reason
    counts: dict


def _labels(raw: pd.DataFrame, data: DataParams, where: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    ep = data.events
    reason = np.full(len(raw), "", dtype=object)
    at = hours_since(raw[ep.prediction_time])
    reason[np.isnan(at)] = f"{ep.prediction_time}: not a time"
    if data.target in raw:  # new stays to score have no outcome yet
        reason[raw[data.target].str.strip().eq("").to_numpy()] = f"{data.target}: missing"
    reason[raw[ep.stay_id].str.strip().eq("").to_numpy()] = f"{ep.stay_id}: missing"
    again = raw[ep.stay_id].duplicated(keep="first").to_numpy() & (reason == "")
    reason[again] = f"{ep.stay_id}: a second label row for the stay"
    ok = reason == ""
    held = pd.DataFrame({"row_id": np.flatnonzero(~ok), "reason": reason[~ok]})
    return raw[ok].assign(**{ROW_ID: np.flatnonzero(ok)}).reset_index(drop=True), at[ok], held


def check(events: pd.DataFrame, labels: pd.DataFrame, data: DataParams, where: tuple[str, str]) -> Checked:
    """The validation of both tables; raises ValidationFailed (one line: file, column, rule, count) on leakage, an
    identifier in the text, or when data.events.units names no variable."""
    ep: EventParams = data.events
    if not ep.units:
        raise ValidationFailed(
            f"{where[0]}: data.events.units names no variable (rule: each variable's units, the first canonical)"
        )
    screen_text(events, [ep.code, ep.value], where[0])
    valid_labels, at, held_labels = _labels(labels, data, where[1])
    stay_pos = pd.Series(np.arange(len(valid_labels)), index=valid_labels[ep.stay_id].str.strip().to_numpy())
    n = len(events)
    reason = np.full(n, "", dtype=object)

    def mark(bad: np.ndarray, why: str) -> None:
        reason[bad & (reason == "")] = why

    pos = events[ep.stay_id].str.strip().map(stay_pos).to_numpy(dtype="float64")
    mark(np.isnan(pos), NO_LABEL)
    t = hours_since(events[ep.time])
    mark(np.isnan(t), f"{ep.time}: not a time")
    value = pd.to_numeric(events[ep.value].str.strip(), errors="coerce").to_numpy(dtype="float64")
    mark(~np.isfinite(value), f"{ep.value}: not a number")
    variables = list(ep.units)
    code = events[ep.code].str.strip()
    var = code.map({v: i for i, v in enumerate(variables)}).to_numpy(dtype="float64")
    mark(np.isnan(var), f"{ep.code}: not a variable in data.events.units")
    unit = events[ep.unit].str.strip().to_numpy(dtype=object)
    scale, offset = np.full(n, np.nan), np.full(n, np.nan)
    converted: dict[str, int] = {}
    for v, known in ep.units.items():
        canonical = next(iter(known))
        of = (code == v).to_numpy()
        for u, (a, b) in known.items():
            hit = of & (unit == u)
            scale[hit], offset[hit] = a, b
            if u != canonical and hit.any():
                converted[f"{v}: {u} -> {canonical}"] = int(hit.sum())
    mark(np.isnan(scale), f"{ep.unit}: not a unit data.events.units lists for the variable")
    value = value * scale + offset
    # Duplicate charting: the same stay, time, variable and value (after conversion) as an earlier row.
    key = pd.DataFrame({"s": pos, "t": t, "v": var, "x": np.round(value, 6)})
    rows = key.assign(r=np.arange(n)).groupby(["s", "t", "v", "x"], sort=False, dropna=False)["r"]
    first = rows.transform("min").to_numpy()
    dup = (first != np.arange(n)) & (reason == "")
    reason[dup] = [f"duplicate: exact repeat of event row {int(r)}" for r in first[dup]]

    ok = reason == ""
    stay = np.where(ok, pos, 0).astype("int64")
    # Hours since the stay's first readable event: relative times only from here on.
    start = pd.Series(t[ok]).groupby(stay[ok]).min()
    origin = np.full(len(valid_labels), np.nan)
    origin[start.index.to_numpy()] = start.to_numpy()
    rel = t - origin[stay]
    predict_hour = at - origin  # NaN for a stay without events: nothing to place
    after = ok & (rel > predict_hour[stay])
    if after.any():
        late = pd.Series(code.to_numpy()[after]).value_counts()
        if ep.after_prediction == "stop":
            named = ", ".join(f"{v} {c}" for v, c in late.items())
            raise ValidationFailed(
                f"{where[0]}: column {ep.time}: {int(after.sum())} event(s) after their stay's prediction time "
                f"(rule: no event after the prediction time, leakage): {named}; if they were charted late for "
                "earlier measurements, fix their times, else -P data.events.after_prediction=drop quarantines them"
            )
        reason[after] = AFTER
    opens = predict_hour - ep.window_hours
    mark(ok & (rel < opens[stay]), BEFORE)
    ok = reason == ""
    held = pd.DataFrame({"event_row": np.flatnonzero(~ok), "reason": reason[~ok]})
    counts = {
        "events_in": n,
        "events_on_grid": int(ok.sum()),
        "events_quarantined": int((~ok).sum()),
        "events_by_reason": {
            (r if not r.startswith("duplicate") else "duplicate"): int(c)
            for r, c in pd.Series(reason[~ok]).str.replace(r"row \d+", "row", regex=True).value_counts().items()
        },
        "unit_conversions": converted,
        "events_after_prediction": {str(v): int(c) for v, c in late.items()} if after.any() else {},
    }
    return Checked(
        labels=valid_labels,
        held_labels=held_labels,
        stay=stay[ok],
        hour=(rel - opens[stay])[ok],
        variable=var[ok].astype("int64"),
        value=value[ok],
        variables=variables,
        held_events=held,
        counts=counts,
    )


def _checked(labels: pd.DataFrame, events: pd.DataFrame, stored: dict, variables: list[str]):
    """New stays checked as the model's validate checked them: (event params, label rows, events, Checked)."""
    units = {v: stored["units"][v] for v in variables}
    ep = EventParams(**(stored | {"after_prediction": "drop", "units": units}))
    data = DataParams(kind="events", target="", events=ep)  # new stays have no outcome column
    for frame, cols, what in (
        (labels, [ep.stay_id, ep.prediction_time], "label rows"),
        (events, [ep.stay_id, ep.time, ep.code, ep.value, ep.unit], "events"),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValidationFailed(f"the {what} lack column(s) {missing}")
    labels = labels.reset_index(drop=True).astype("string").fillna("")
    events = events.reset_index(drop=True).astype("string").fillna("")
    return ep, labels, events, check(events, labels, data, ("events", "label rows"))


def score_stays(
    labels: pd.DataFrame, events: pd.DataFrame, stored: dict, variables: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """New stays as a trained model reads them: (raw grid of every label row [rows, bins, variables], the reason
    each row cannot be scored, "" when it can). stored: data.events as the model was trained (SequenceNormaliser
    .settings; the bundle's JSON sorts its keys, so variables gives the grid's order). A label row is refused when it
    fails a label check, when no event of its stay falls in its window, or, when the model was trained with
    after_prediction=stop, when its stay has events after its prediction time."""
    from medflow.sequences import grid

    ep, labels, events, checked = _checked(labels, events, stored, variables)
    rows = checked.labels[ROW_ID].to_numpy()
    n = len(labels)
    window = grid.build(
        checked.stay, checked.hour, checked.variable, checked.value, len(rows), len(checked.variables),
        ep.window_hours, ep.bin_hours, len(rows) or 1,
    )  # fmt: skip
    raw = np.full((n, window.shape[1], window.shape[2]), np.nan, dtype=np.float32)
    raw[rows] = window
    reason = np.full(n, "", dtype=object)
    reason[checked.held_labels["row_id"].to_numpy()] = checked.held_labels["reason"].to_numpy()
    empty = np.isnan(window).all(axis=(1, 2))
    reason[rows[empty]] = "no event of the stay in its observation window"
    if stored.get("after_prediction", "stop") == "stop":
        late = checked.held_events.loc[checked.held_events["reason"].eq(AFTER), "event_row"].to_numpy()
        stays = events[ep.stay_id].str.strip().to_numpy()[late]
        per = pd.Series(stays).value_counts()
        stay_of = labels[ep.stay_id].str.strip().to_numpy()
        for i in np.flatnonzero(pd.Series(stay_of).isin(per.index).to_numpy()):
            reason[i] = f"{per[stay_of[i]]} event(s) after the prediction time (leakage)"
    return raw, reason


def stay_aggregates(labels: pd.DataFrame, events: pd.DataFrame, stored: dict, variables: list[str]) -> pd.DataFrame:
    """The window aggregates (<variable>_last, _min, _max, _mean, _count) of each label row that passes its checks,
    as validate computes them for the training split: a variable never charted in a stay's window is NaN there."""
    from medflow.sequences import grid

    _, _, _, checked = _checked(labels, events, stored, variables)
    args = (checked.stay, checked.hour, checked.variable, checked.value)
    return grid.aggregates(*args, len(checked.labels), checked.variables)
