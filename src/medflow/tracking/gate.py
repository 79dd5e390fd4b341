"""Promotion gate: a version is blessed only above a floor and against the current champion, never alone."""

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
) -> Decision:
    if not math.isfinite(value):
        return Decision(False, f"{metric} is not a number")
    if value < floor:
        return Decision(False, f"{metric}={value:.4f} is below the floor {floor:.4f}")
    if champion_version is None:
        return Decision(True, f"{metric}={value:.4f} reaches the floor {floor:.4f} and there is no champion")
    if champion_value is None:
        # Without the champion's score there is no baseline; a person decides by moving the alias.
        return Decision(False, f"champion v{champion_version} has no recorded {metric} to compare against")
    if value >= champion_value - tolerance:
        return Decision(
            True,
            f"{metric}={value:.4f} is within tolerance {tolerance:g} of champion "
            f"v{champion_version} ({champion_value:.4f}) or better",
        )
    return Decision(
        False,
        f"{metric}={value:.4f} is worse than champion v{champion_version} ({champion_value:.4f}) "
        f"by more than the tolerance {tolerance:g}",
    )
