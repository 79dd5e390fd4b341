"""A synthetic ICU cohort (built-in source `icu_synthetic`) with the faults real charting has, and a known signal
that lives in the order of events, not in their window aggregates.

Each stay is observed for `window` hours before its prediction time. Every stay has a lactate surge and a fall in
mean arterial pressure (MAP), each returning to baseline before the window ends. When lactate rises first and MAP
falls hours later (hypoperfusion leading into shock) the outcome is likely; when MAP falls first and lactate follows,
it is not. Levels, minima, maxima, means, last values and counts are drawn from the same distributions in both
cases, so aggregates over the window carry little of the signal; heart rate carries a weak level signal for them.

Faults: irregular sampling, 1-3 stays per patient, temperature charted in Fahrenheit and lactate in mg/dL for some
rows, rows in units nobody can convert, duplicate charting, events charted after the prediction time, a few
unreadable times and text where a number belongs. Dates are synthetic (a shifted calendar), never real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NAME = "icu_synthetic"
# Normal level, noise SD, mean hours between charted values, canonical unit.
VITALS = {
    "heart_rate": (85.0, 6.0, 2.0, "bpm"),
    "map": (78.0, 4.0, 1.5, "mmHg"),
    "lactate": (1.4, 0.25, 2.0, "mmol/L"),
    "temperature": (37.0, 0.3, 4.0, "C"),
    "resp_rate": (18.0, 2.0, 3.0, "/min"),
}
# Every unit the cohort charts in, as [scale, offset] into the variable's first (canonical) unit: sequence params.
UNITS = {
    "heart_rate": {"bpm": [1.0, 0.0]},
    "map": {"mmHg": [1.0, 0.0]},
    "lactate": {"mmol/L": [1.0, 0.0], "mg/dL": [1 / 9.008, 0.0]},
    "temperature": {"C": [1.0, 0.0], "F": [5 / 9, -160 / 9]},
    "resp_rate": {"/min": [1.0, 0.0]},
}
EPOCH = np.datetime64("2150-01-01T00:00")  # a shifted calendar: no real date is ever generated


def _episode(t: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A smooth bump (0 to 1 and back) over [start, start + length] hours, 0 elsewhere."""
    phase = np.clip((t - start) / length, 0.0, 1.0)
    return np.sin(np.pi * phase) ** 2


def cohort(
    n_stays: int = 2000, seed: int = 0, window: float = 48.0, faults: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, labels): events with subject_id, stay_id, time, code, numeric_value, unit (MEDS-like); labels with
    subject_id, stay_id, prediction_time, outcome ("died"/"survived"). About 110 events per stay."""
    rng = np.random.default_rng(seed)
    stays_of = rng.integers(1, 4, size=n_stays)  # stays per patient, drawn until n_stays are covered
    subject = np.repeat(np.arange(len(stays_of)), stays_of)[:n_stays]
    # A patient's stays follow each other by months on the shifted calendar.
    admit = rng.uniform(0, 3 * 365 * 24, n_stays) + np.arange(n_stays) % 3 * 2000.0
    lead = rng.uniform(2.0, 12.0, n_stays)  # hours charted before the window opens
    predict_at = admit + lead + window

    lactate_first = rng.random(n_stays) < 0.5
    first = rng.uniform(6.0, 16.0, n_stays)  # window hour the first episode starts
    gap = rng.uniform(8.0, 14.0, n_stays)
    lac_start = np.where(lactate_first, first, first + gap)
    map_start = np.where(lactate_first, first + gap, first)
    lac_len, map_len = rng.uniform(6, 10, n_stays), rng.uniform(6, 10, n_stays)
    lac_amp, map_amp = rng.uniform(1.5, 4.0, n_stays), rng.uniform(15.0, 30.0, n_stays)
    hr_level = rng.normal(0.0, 5.0, n_stays)
    risk = np.where(lactate_first, 1.6, -1.6) + 0.12 * hr_level + rng.normal(0.0, 0.8, n_stays)
    died = rng.random(n_stays) < 1 / (1 + np.exp(-(risk - 1.0)))

    frames = []
    for code, (level, sd, every, unit) in VITALS.items():
        per = rng.poisson((window + lead) / every, n_stays) + 2
        stay = np.repeat(np.arange(n_stays), per)
        # Irregular: uniform times over the stay so far (window hours are 0..window, the lead before is negative).
        hour = rng.uniform(-lead[stay], window)
        value = level + rng.normal(0.0, sd, len(stay))
        if code == "lactate":
            value += lac_amp[stay] * _episode(hour, lac_start[stay], lac_len[stay])
        elif code == "map":
            value -= map_amp[stay] * _episode(hour, map_start[stay], map_len[stay])
        elif code == "heart_rate":
            value += hr_level[stay]
        frames.append(pd.DataFrame({"stay": stay, "hour": hour, "code": code, "value": value, "unit": unit}))
    ev = pd.concat(frames, ignore_index=True)

    if faults:
        n = len(ev)
        fahrenheit = (ev["code"] == "temperature").to_numpy() & (rng.random(n) < 0.1)
        ev.loc[fahrenheit, "value"] = ev.loc[fahrenheit, "value"] * 9 / 5 + 32
        ev.loc[fahrenheit, "unit"] = "F"
        mg = (ev["code"] == "lactate").to_numpy() & (rng.random(n) < 0.1)
        ev.loc[mg, "value"] = ev.loc[mg, "value"] * 9.008
        ev.loc[mg, "unit"] = "mg/dL"
        ev.loc[rng.random(n) < 0.001, "unit"] = "units?"  # nobody knows: quarantined
        # Charted after the prediction time: results filed late, the next shift's vitals.
        late = rng.random(n) < 0.004
        ev.loc[late, "hour"] = window + rng.uniform(0.1, 6.0, int(late.sum()))
        dup = ev.sample(frac=0.02, random_state=seed)  # the same value charted twice
        ev = pd.concat([ev, dup], ignore_index=True)

    hours = admit[ev["stay"].to_numpy()] + lead[ev["stay"].to_numpy()] + ev["hour"].to_numpy()
    time = (EPOCH + (hours * 3600).astype("int64").astype("timedelta64[s]")).astype(str)
    value = ev["value"].round(2).astype(str).to_numpy(dtype=object)
    if faults:
        bad_time = rng.random(len(ev)) < 0.0005
        time = np.where(bad_time, "not charted", time)
        text = rng.random(len(ev)) < 0.0005
        value[text] = "see note"
    events = pd.DataFrame(
        {
            "subject_id": subject[ev["stay"].to_numpy()] + 10_000,
            "stay_id": ev["stay"].to_numpy() + 500_000,
            "time": time,
            "code": ev["code"].to_numpy(),
            "numeric_value": value,
            "unit": ev["unit"].to_numpy(),
        }
    )
    events = events.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # charted in no particular order
    at = (EPOCH + (predict_at * 3600).astype("int64").astype("timedelta64[s]")).astype(str)
    labels = pd.DataFrame(
        {
            "subject_id": subject + 10_000,
            "stay_id": np.arange(n_stays) + 500_000,
            "prediction_time": at,
            "outcome": np.where(died, "died", "survived"),
        }
    )
    return events, labels


def files(data_dir: Path, name: str = NAME) -> tuple[Path, Path]:
    return data_dir / f"{name}_events.csv", data_dir / f"{name}_labels.csv"


def materialise(data_dir: Path, n_stays: int = 2000, seed: int = 0, name: str = NAME) -> tuple[Path, Path]:
    """Writes the cohort under data_dir (once: the same bytes on every machine, as DVC versions them)."""
    events_file, labels_file = files(data_dir, name)
    if events_file.exists() and labels_file.exists():
        return events_file, labels_file
    data_dir.mkdir(parents=True, exist_ok=True)
    events, labels = cohort(n_stays, seed)
    for frame, out in ((events, events_file), (labels, labels_file)):
        tmp = out.with_suffix(".csv.tmp")
        frame.to_csv(tmp, index=False, lineterminator="\n")
        tmp.replace(out)
    return events_file, labels_file
