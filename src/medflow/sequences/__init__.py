"""Patients over time (data.kind=events, docs/sequences.md): a long table of timestamped events and a table of label
rows (one per stay: prediction time, outcome), validated, reduced to hours since each stay's first event, gridded into
tensors in chunks of stays, and learned by recurrent or Transformer models beside window-aggregate baselines.

cohort: the synthetic ICU cohort; events: reading and validating both tables; grid: the regular grid, its
normalisation fitted on the training split and the window aggregates; steps: validate and clean for this kind.
"""
