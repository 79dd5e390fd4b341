"""Promotion gate: a version is blessed only above its floors and against a reference on the same test patients.

The reference is the champion re-scored on the current test split, or, with no champion yet, the best simple
baseline fitted on the same train split. A paired patient bootstrap of delta = metric(candidate) - metric(reference)
decides (evaluation.metrics.paired_delta of both models' draws on the same resamples); this module only reads its
result, so the rule is testable on synthetic numbers. Under `superiority` a tie never promotes. A candidate that is
not comparable with the champion (another dataset or input schema), or that comes from an exploratory run, is a
challenger at most: moving `champion` to it takes `medflow promote`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # registry commands import this package: not numpy, pandas and scikit-learn with it
    from medflow.evaluation.metrics import Delta


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


@dataclass(frozen=True)
class Comparison:
    """The paired test of the candidate against one reference ("champion v3", "baseline logistic_regression")."""

    reference: str
    delta: Delta
    test: str  # superiority | non_inferiority
    margin: float  # non_inferiority only
    margin_key: str = "register.gate.margin"  # the parameter that set margin, named in every refusal
    # The metric is better lower (MAE): delta is then reference - candidate, an improvement as for every metric.
    lower_is_better: bool = False
    test_key: str = "register.gate.test"  # the parameter that asked for this test, named likewise

    @property
    def bound(self) -> float:
        return 0.0 if self.test == "superiority" else -self.margin

    @property
    def passed(self) -> bool:
        return math.isfinite(self.delta.ci_low) and self.delta.ci_low > self.bound

    def describe(self) -> str:
        d = self.delta
        if self.test == "superiority":
            rule = f"superiority ({self.test_key})"
        else:
            rule = f"non-inferiority, margin {self.margin:g} ({self.margin_key})"
        what = f"improvement in {d.metric} ({self.reference} - candidate)" if self.lower_is_better else d.metric
        return (
            f"delta {what} vs {self.reference} = {d.delta:+.4f} (95% CI [{d.ci_low:+.4f}, {d.ci_high:+.4f}]); "
            f"{rule} needs the lower bound above {self.bound:+.4f}"
        )


def decide(
    metric: str,
    value: float,
    floor: float | None,
    champion_version: str | None = None,
    comparison: Comparison | None = None,
    *,
    sensitivity: float | None = None,
    min_sensitivity: float | None = None,
    regressions: tuple[str, ...] = (),
    mismatch: str | None = None,
    exploratory: str | None = None,
    leak: str | None = None,
    higher_is_better: bool = True,
    required: Comparison | str | None = None,
    card_missing: tuple[str, ...] = (),
) -> Decision:
    """comparison: the paired test against the champion, or against the best baseline when there is none;
    regressions: subgroups that lost more than the tolerance; higher_is_better: False makes floor a ceiling;
    mismatch: how the candidate's inputs differ from the champion's; exploratory: why the run is an experiment;
    leak: why its score looks learnt from a leak; required: the superiority test over the baseline the project
    requires it to beat, or why that cannot be tested; card_missing: the register.require_card_fields the card
    section leaves empty."""
    decision = _by_evidence(
        metric, value, floor, champion_version, comparison, sensitivity, min_sensitivity, regressions, mismatch,
        higher_is_better,
    )  # fmt: skip
    if isinstance(required, str):
        decision = Decision(False, f"{required}; {decision.reason}")
    elif required is not None:
        verdict = f"{required.describe()}: {'met' if required.passed else 'not met'}"
        decision = Decision(decision.promoted and required.passed, f"{verdict}; {decision.reason}")
    if card_missing:
        missing = ", ".join(f"register.card.{k}" for k in card_missing)
        decision = Decision(False, f"{missing} empty (register.require_card_fields); {decision.reason}")
    if leak:
        return Decision(False, f"{leak}; {decision.reason}")
    if decision.promoted and exploratory:
        return Decision(False, f"{exploratory}, so challenger at most ({decision.reason}); `medflow promote` moves it")
    return decision


def _by_evidence(
    metric: str,
    value: float,
    floor: float | None,
    champion_version: str | None,
    comparison: Comparison | None,
    sensitivity: float | None,
    min_sensitivity: float | None,
    regressions: tuple[str, ...],
    mismatch: str | None,
    higher_is_better: bool = True,
) -> Decision:
    if not math.isfinite(value):
        return Decision(False, f"{metric} is not a number")
    failed = []
    if floor is not None and not higher_is_better and value > floor:
        failed.append(
            f"{metric}={value:.4f} is above the ceiling {floor:.4f} (register.min_primary, a ceiling for a metric "
            "where lower is better; -P register.min_primary=VALUE changes it, null removes it)"
        )
    if floor is not None and higher_is_better and value < floor:
        failed.append(
            f"{metric}={value:.4f} is below the floor {floor:.4f} (register.min_primary; "
            "-P register.min_primary=VALUE changes it, null removes it)"
        )
    if min_sensitivity is not None and (sensitivity is None or not sensitivity >= min_sensitivity):
        got = "undefined" if sensitivity is None else f"{sensitivity:.4f}"
        failed.append(
            f"test sensitivity at the threshold ({got}) is below the floor {min_sensitivity:.4f} "
            "(register.gate.min_sensitivity; -P register.gate.min_sensitivity=VALUE changes it, null removes it)"
        )
    if champion_version is not None and mismatch:
        return Decision(
            False,
            f"{mismatch} from champion v{champion_version}'s: metrics alone cannot compare them; "
            "`medflow promote` moves champion after review",
        )
    if comparison is None:
        if champion_version is not None:
            # Without the champion's scores on these patients there is no paired test; a person decides.
            failed.append(f"champion v{champion_version} could not be re-scored on the test split")
        if failed:
            return Decision(False, "; ".join(failed))
        return Decision(True, f"{metric}={value:.4f} passes its floors, there is no champion and no baseline")
    verdict = f"{comparison.describe()}: {'met' if comparison.passed else 'not met'}"
    if not failed and comparison.passed and not regressions:
        return Decision(True, verdict + ("" if champion_version else " (no champion yet)"))
    # The paired result is part of every refusal, so the reader sees the CI of delta even when a floor decided.
    stays = f"champion v{champion_version} stays" if champion_version is not None else "no champion yet"
    return Decision(False, "; ".join([*failed, verdict, *regressions]) + f", {stays}")


def subgroup_regressions(candidate: dict, reference: dict, tolerance: float) -> tuple[str, ...]:
    """Groups shown (not suppressed) in both subgroup reports whose primary metric got worse by more than tolerance:
    fell by more than it (a metric better higher), or rose by more than that fraction of the reference group's value
    (a metric better lower, in the target's units: MAE; as the gate's margins)."""
    metric = candidate["primary_metric"]
    lower = bool(candidate.get("lower_is_better"))
    ref = {r["group"]: r[metric] for r in reference["groups"] if metric in r}
    out = []
    for r in candidate["groups"]:
        if metric not in r or r["group"] not in ref:
            continue
        was, now = ref[r["group"]], r[metric]
        if lower and now - was > tolerance * abs(was):
            out.append(
                f"subgroup {r['group']} {metric} rises from {was:.4f} to {now:.4f} (more than the tolerance "
                f"{tolerance:g} of the champion's, register.gate.subgroup_tolerance)"
            )
        elif not lower and was - now > tolerance:
            out.append(
                f"subgroup {r['group']} {metric} falls from {was:.4f} to {now:.4f} "
                f"(more than the tolerance {tolerance:g})"
            )
    return tuple(out)
