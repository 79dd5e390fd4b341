"""Where a training run's registration stands, so that one run is one version.

A run already registered and decided is reported, moving no alias; a registration that a kill interrupted is
finished, not repeated; a decision taken under other register.* (a floor changed) is taken again. Every decision is
kept on the version as a numbered tag, oldest first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

from medflow.params import Params
from medflow.promotion.gate import Decision

GATE = "medflow.gate"  # the version's last gate decision: "promoted: why" or "not promoted: why"
GATE_PARAMS = "medflow.gate_params"  # hash of the register.* the version's last gate decision read
DECISIONS = "medflow.gate."  # + n: every gate decision on the version, oldest first ("medflow.gate": the last)


class Registered(Protocol):
    """A registry version as tracking.Version holds it."""

    version: str
    tags: dict[str, str]

    @property
    def complete(self) -> bool: ...


def gate_params(params: Params) -> str:
    """What the gate read besides the model and its test split: a change reopens a registered run's decision."""
    text = json.dumps(params.register.model_dump(mode="json", exclude={"model_name"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Standing:
    done: Registered | None  # the run's version whose registration completed
    pending: Registered | None  # the version to finish or decide again; None: register a new one
    reopen: bool  # done was decided under other register.*: the gate decides again
    finished: bool  # nothing to do but report done
    resumed: Decision | None  # killed after its alias moved: the gate had promoted it, and that stands

    @property
    def past_decision(self) -> tuple[bool, str]:
        """done's last decision: (promoted, reason)."""
        promoted, _, reason = self.done.tags.get(GATE, "").partition(": ")
        return promoted == "promoted", reason


def standing(earlier: list[Registered], champion: Registered | None, params: Params) -> Standing:
    """earlier: the run's versions, oldest first; champion: the version aliased `champion`."""
    done = next((v for v in earlier if v.complete), None)
    is_champion = champion is not None and done is not None and champion.version == done.version
    # A version decided under other register.* is decided again; the champion stays as it is.
    reopen = done is not None and done.tags.get(GATE_PARAMS, gate_params(params)) != gate_params(params)
    if done is not None and (not reopen or is_champion):
        return Standing(done, None, reopen, True, None)
    # A registration of this run that a kill interrupted, or the one whose decision is reopened.
    pending = done or (earlier[-1] if earlier else None)
    resumed = None
    if pending is not None and champion is not None and champion.version == pending.version:
        # Killed after its alias moved: the gate had promoted it, and nothing since has replaced it.
        resumed = Decision(True, pending.tags.get(GATE, "").partition(": ")[2])
    return Standing(done, pending, reopen, False, resumed)


def gate_line(decision: Decision) -> str:
    return f"{'promoted' if decision.promoted else 'not promoted'}: {decision.reason}"


def decision_tags(decision: Decision, params: Params, pending: Registered | None) -> dict[str, str]:
    """The version's tags for this decision: the last decision, what it read, and its place in the history."""
    gate = gate_line(decision)
    tags = {GATE: gate, GATE_PARAMS: gate_params(params)}
    past = {k: v for k, v in (pending.tags if pending else {}).items() if k.startswith(DECISIONS)}
    if not past or past.get(f"{DECISIONS}{len(past)}") != gate:  # a resumed registration decided once
        tags[f"{DECISIONS}{len(past) + 1}"] = gate
    return tags
