"""Physiological signals (data.kind=signals, docs/sequences.md): a manifest of waveform files (DICOM Waveform or
WFDB records) read through one reader, resampled to data.signals.rate_hz, cut to data.signals.seconds, each lead
standardised; records with a missing or flat lead quarantined. read: the reader; synthetic: ECG-like records for
learning; steps: validate for this kind (the steps after it share the event grid's path)."""
