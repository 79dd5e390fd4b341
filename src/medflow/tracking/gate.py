"""Promotion gate: a version is blessed only above a floor and against the current champion, never alone.

Only a strictly better score moves `champion` (or one within an explicit tolerance > 0): a tie, such as the same
model registered again, leaves it where it is. A candidate that is not comparable with the champion (another
dataset or input schema), or that comes from an exploratory run, is a challenger at most: moving `champion` to it
takes `medflow promote`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


def decide(
    metric: str,
    value: float,
    floor: float,
    tolerance: float,
    champion_version: str | None = None,
    champion_value: float | None = None,
    *,
    mismatch: str | None = None,
    exploratory: str | None = None,
) -> Decision:
    """mismatch: how the candidate's inputs differ from the champion's; exploratory: why the run is an experiment."""
    decision = _by_metric(metric, value, floor, tolerance, champion_version, champion_value, mismatch)
    if decision.promoted and exploratory:
        return Decision(False, f"{exploratory}, so challenger at most ({decision.reason}); `medflow promote` moves it")
    return decision


def _by_metric(
    metric: str,
    value: float,
    floor: float,
    tolerance: float,
    champion_version: str | None,
    champion_value: float | None,
    mismatch: str | None,
) -> Decision:
    if not math.isfinite(value):
        return Decision(False, f"{metric} is not a number")
    if value < floor:
        return Decision(False, f"{metric}={value:.4f} is below the floor {floor:.4f}")
    if champion_version is None:
        return Decision(True, f"{metric}={value:.4f} reaches the floor {floor:.4f} and there is no champion")
    if mismatch:
        return Decision(
            False,
            f"{mismatch} from champion v{champion_version}'s: metrics alone cannot compare them; "
            "`medflow promote` moves champion after review",
        )
    if champion_value is None:
        # Without the champion's score there is no baseline; a person decides by moving the alias.
        return Decision(False, f"champion v{champion_version} has no recorded {metric} to compare against")
    if value > champion_value - tolerance:
        within = f"within tolerance {tolerance:g} of" if value <= champion_value else "better than"
        return Decision(True, f"{metric}={value:.4f} is {within} champion v{champion_version} ({champion_value:.4f})")
    if value == champion_value:
        return Decision(False, f"{metric}={value:.4f} ties champion v{champion_version}: a tie does not promote")
    return Decision(
        False,
        f"{metric}={value:.4f} is worse than champion v{champion_version} ({champion_value:.4f}) "
        f"by at least the tolerance {tolerance:g}",
    )
