"""One reader for waveform files: DICOM Waveform (pydicom) by the .dcm suffix, else a WFDB record (wfdb; the
header's path with or without .hea). Returns the samples in physical units, the rate and the lead names."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass
class Record:
    samples: np.ndarray  # [time, leads], float64, physical units
    rate_hz: float
    leads: list[str]


def _lead_name(channel) -> str:
    source = channel.ChannelSourceSequence[0]
    return str(getattr(source, "CodeMeaning", "") or getattr(source, "CodeValue", ""))


def read_record(path: Path) -> Record:
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        from pydicom import dcmread

        ds = dcmread(path)
        group = ds.WaveformSequence[0]
        leads = [_lead_name(c) for c in group.ChannelDefinitionSequence]
        return Record(np.asarray(ds.waveform_array(0), dtype="float64"), float(group.SamplingFrequency), leads)
    import wfdb

    record = wfdb.rdrecord(str(path.with_suffix("") if path.suffix.lower() in (".hea", ".dat") else path))
    return Record(np.asarray(record.p_signal, dtype="float64"), float(record.fs), list(record.sig_name))


def resample(samples: np.ndarray, rate_hz: float, to_hz: float) -> np.ndarray:
    """Polyphase resampling (scipy) by the rational ratio of the rates: anti-aliased, no wrap-around."""
    if rate_hz == to_hz:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(to_hz / rate_hz).limit_denominator(1000)
    return resample_poly(samples, ratio.numerator, ratio.denominator, axis=0)


def prepare(record: Record, leads: list[str], to_hz: float, seconds: float, flat_std: float):
    """(array [samples, leads] float32 standardised per lead, summary features, reason "" or why it is refused).
    A lead the record lacks, a lead whose SD is below flat_std (physical units) or holds gaps, and a record shorter
    than `seconds` are refused, naming the lead."""
    n = int(round(to_hz * seconds))
    missing = [lead for lead in leads if lead not in record.leads]
    if missing:
        return None, None, f"lead(s) missing: {', '.join(missing)}"
    x = record.samples[:, [record.leads.index(lead) for lead in leads]]
    gaps = [lead for lead, col in zip(leads, x.T, strict=True) if not np.isfinite(col).all()]
    if gaps:
        return None, None, f"lead(s) with gaps (NaN): {', '.join(gaps)}"
    x = resample(x, record.rate_hz, to_hz)
    if len(x) < n:
        return None, None, f"shorter than data.signals.seconds ({len(x) / to_hz:.1f} s)"
    x = x[:n]
    sd = x.std(axis=0)
    flat = [lead for lead, s in zip(leads, sd, strict=True) if s < flat_std]
    if flat:
        return None, None, f"flat lead(s): {', '.join(flat)}"
    z = (x - x.mean(axis=0)) / sd
    # What the baselines read, per lead: spread, range, how fast it moves, and how often it crosses its mean.
    features = {}
    for i, lead in enumerate(leads):
        features[f"{lead}_std"] = float(sd[i])
        features[f"{lead}_range"] = float(np.ptp(x[:, i]))
        features[f"{lead}_mean_abs_diff"] = float(np.abs(np.diff(z[:, i])).mean())
        features[f"{lead}_crossings"] = float((np.diff(np.sign(z[:, i])) != 0).mean() * to_hz)
    return z.astype(np.float32), features, ""


def score_records(rows, settings: dict, leads: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """New records as a trained model reads them: ([rows, samples, leads] float32, the reason each row cannot be
    scored, "" when it can). rows: a manifest whose path column (settings: data.signals as trained) names each file,
    relative to the working directory."""
    column = settings.get("path_column", "path")
    n = int(round(settings["rate_hz"] * settings["seconds"]))
    out = np.zeros((len(rows), n, len(leads)), dtype=np.float32)
    reasons = np.full(len(rows), "", dtype=object)
    for i, name in enumerate(rows[column].fillna("").astype(str).str.strip()):
        try:
            record = read_record(Path(name))
        except Exception:  # noqa: BLE001 - a reader's message may quote the file; the reason names the rule
            reasons[i] = "not a readable DICOM Waveform or WFDB record"
            continue
        z, _, why = prepare(record, leads, settings["rate_hz"], settings["seconds"], settings["flat_std"])
        if why:
            reasons[i] = why
        else:
            out[i] = z
    return out, reasons
