"""Monitoring: the champion's training reference (aggregates only), drift statistics of a new batch, the report."""
