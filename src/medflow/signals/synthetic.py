"""Synthetic ECG-like records (built-in source `ecg_synthetic`), written as WFDB records with a manifest.

Each record is 10 s of two leads: beats of P, QRS and T waves (Gaussian bumps) on a wandering baseline with noise.
`irregular` records have RR intervals that vary beat to beat (an atrial-fibrillation-like rhythm) and no P wave;
`regular` ones a steady rhythm. Heart rates, amplitudes and noise are drawn alike for both, so the summary
statistics of a lead carry little of the class. Records come at 250 or 500 Hz (resampled on reading); a few have a
flat lead or lack one, and are quarantined.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NAME = "ecg_synthetic"
LEADS = ["I", "II"]


def _beats(rng, seconds: float, irregular: bool) -> np.ndarray:
    rr = rng.uniform(0.6, 1.0)
    times, t = [], rng.uniform(0, rr)
    while t < seconds:
        times.append(t)
        t += rr * (rng.uniform(0.6, 1.4) if irregular else rng.normal(1.0, 0.02))
    return np.asarray(times)


def record(rng, irregular: bool, rate: float, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    out = np.zeros((len(t), len(LEADS)))
    gains = rng.uniform(0.6, 1.4, len(LEADS))
    for beat in _beats(rng, seconds, irregular):
        wave = 1.0 * np.exp(-(((t - beat) / 0.012) ** 2))  # QRS
        wave += 0.3 * np.exp(-(((t - beat - 0.25) / 0.04) ** 2))  # T
        if not irregular:
            wave += 0.15 * np.exp(-(((t - beat + 0.16) / 0.025) ** 2))  # P
        out += wave[:, None] * gains
    out += 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6))[:, None]
    return out + rng.normal(0, 0.03, out.shape)


def materialise(data_dir: Path, n: int = 400, seed: int = 0, name: str = NAME) -> Path:
    """Writes the records under data/<name>/ and the manifest data/<name>.csv (path, rhythm, patient_id) once."""
    import wfdb

    manifest = data_dir / f"{name}.csv"
    if manifest.exists():
        return manifest
    folder = data_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        irregular = bool(rng.random() < 0.5)
        rate = float(rng.choice([250.0, 500.0]))
        x = record(rng, irregular, rate)
        leads = list(LEADS)
        if i % 97 == 5:
            x[:, 1] = 0.0  # a lead disconnected: flat
        if i % 89 == 7:
            x, leads = x[:, :1], leads[:1]  # a lead not recorded
        stem = f"r{i:04d}"
        wfdb.wrsamp(stem, fs=rate, units=["mV"] * len(leads), sig_name=leads, p_signal=x, fmt=["16"] * len(leads),
                    write_dir=str(folder))  # fmt: skip
        rows.append({"path": f"{name}/{stem}.hea", "rhythm": "irregular" if irregular else "regular",
                     "patient_id": f"P{i // 2:04d}"})  # fmt: skip
    tmp = manifest.with_suffix(".csv.tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(manifest)
    return manifest
