"""The model card's change-control plan: what may change without a new review, how a retrained version is verified,
when it is promoted and what triggers retraining. Written from the params the gate (steps/register.py,
promotion/gate.py) and `medflow monitor` read, so the card states the rules the code applies, with their values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # registry commands import the card: not pydantic's models with it
    from medflow.params import Params


def plan(params: Params, dataset: str, kind: str, lower_is_better: bool) -> dict:
    """The plan as the card's JSON holds it: the values (criteria, monitor, promote) and the sentences built from
    them; dataset: data.source's name, as min_primary and require_card_fields are keyed; kind: data.kind."""
    rp, g, ep, mp = params.register, params.register.gate, params.evaluate, params.monitor
    metric, floor = ep.primary_metric, rp.floor(dataset)
    leak_checked = kind == "tabular" and params.data.task == "classification"
    criteria = {
        "primary_metric": metric,
        "lower_is_better": lower_is_better,
        "min_primary": floor,
        "min_sensitivity": g.min_sensitivity,
        "test": g.test,
        "margin": g.margin,
        "baseline_margin": g.baseline_margin,
        "require_superiority_over": g.require_superiority_over,
        "n_boot": g.n_boot,
        "subgroups": list(ep.subgroups),
        "subgroup_tolerance": g.subgroup_tolerance,
        # The leak check reads the test ROC-AUC of a tabular classifier (promotion/leakage.py): no other model's.
        "leakage_auc": params.validate_.leakage_auc if leak_checked else None,
        "leak_drop": g.leak_drop if leak_checked else None,
        "required_card_fields": rp.required_card(dataset),
    }
    monitor = {
        k: getattr(mp, k)
        for k in (
            "min_rows", "psi_threshold", "ks_pvalue", "null_rate_change", "min_drifted_features", "performance_floor",
            "update",
        )
    }  # fmt: skip
    return {
        "criteria": criteria,
        "promote": rp.promote,
        "monitor": monitor,
        "may_change": _may_change(params, dataset),
        "verified_by": _verified_by(criteria),
        "promoted_when": _promoted_when(rp.promote),
        "retrained_when": _retrained_when(monitor, metric, lower_is_better),
    }


def _may_change(params: Params, dataset: str) -> list[str]:
    tuned = ", ".join(f"`train.{k}`" for k in params.tune.space_for(params.train.model)) or "none"
    return [
        f"Retraining on new or more rows of `{dataset}` with the same input schema (the same features, classes and "
        "image shape: the version tag `medflow.schema_hash`), e.g. a batch `medflow monitor` added.",
        f"Training settings (`train.*`), by hand or as `medflow tune`'s best trial on the validation split (its "
        f"search space for `{params.train.model}`: {tuned}).",
        "Anything else (another dataset, a feature, class or image shape added or removed, another outcome) makes a "
        "version not comparable with the champion: challenger at most, until a person reviews and promotes it.",
    ]


def _verified_by(c: dict) -> list[str]:
    m = c["primary_metric"]
    better = "reference − candidate (lower is better)" if c["lower_is_better"] else "candidate − reference"
    # For a metric better lower (MAE) both margins are fractions of the reference's value (promotion/evidence.py).
    of = " × the reference's value" if c["lower_is_better"] else ""
    bound = "0" if c["test"] == "superiority" else f"−{c['margin']:g}{of} (register.gate.margin)"
    if c["min_primary"] is None:
        floor = f"No floor on test `{m}` (register.min_primary is null for this dataset)."
    else:
        side = "at most" if c["lower_is_better"] else "at least"
        floor = f"Test `{m}` {side} {c['min_primary']:g} (register.min_primary)."
    out = [floor]
    if c["min_sensitivity"] is not None:
        out.append(
            f"Test sensitivity at the threshold at least {c['min_sensitivity']:g} (register.gate.min_sensitivity)."
        )
    out += [
        f"Against the champion, on the same test patients: paired bootstrap ({c['n_boot']} resamples, "
        f"register.gate.n_boot) of Δ `{m}` = {better}; the 95% CI's lower bound must lie above {bound} "
        f"({c['test'].replace('_', '-')}, register.gate.test).",
        f"With no champion yet: against the best baseline on the same split, lower bound above "
        f"−{c['baseline_margin']:g}{of} (register.gate.baseline_margin).",
    ]
    if c["require_superiority_over"]:
        out.append(
            f"Superiority over `{c['require_superiority_over']}` whatever the champion "
            "(register.gate.require_superiority_over): lower bound above 0."
        )
    if c["subgroups"]:
        groups = ", ".join(f"`{s}`" for s in c["subgroups"])
        out.append(
            f"No group of {groups} loses more than {c['subgroup_tolerance']:g} of `{m}` against the champion "
            "(register.gate.subgroup_tolerance)."
        )
    else:
        out.append(
            f"Subgroups: evaluate.subgroups names none, so no group is checked (the tolerance would be "
            f"{c['subgroup_tolerance']:g}, register.gate.subgroup_tolerance)."
        )
    if c["leakage_auc"] is not None:
        out.append(
            f"Leak check: at test ROC-AUC {c['leakage_auc']:g} or more (validate.leakage_auc), a feature whose "
            f"shuffling costs {c['leak_drop']:g} of it (register.gate.leak_drop) blocks promotion."
        )
    fields = ", ".join(f"`register.card.{k}`" for k in c["required_card_fields"]) or "none"
    out.append(f"Card fields that must be declared (register.require_card_fields): {fields}.")
    return out


def _promoted_when(promote: str) -> list[str]:
    if promote == "auto":
        how = (
            "register.promote: auto. A version that meets every criterion above becomes `champion` (the alias "
            "consumers load) at once; one that does not becomes `challenger`. A `dvc exp run` is challenger at most."
        )
    else:
        how = "register.promote: never. The gate decides and records, but no version becomes `champion` by it."
    return [
        how,
        "A person moves `champion` outside the gate with `medflow promote NAME VERSION --reason ...` and back with "
        "`medflow rollback NAME --reason ...`; every move is kept in the model's history with who, when and why.",
    ]


def _retrained_when(m: dict, metric: str, lower_is_better: bool) -> list[str]:
    out = [
        f"`medflow monitor` compares each new batch with this version's training reference; a batch under "
        f"{m['min_rows']} rows is reported, not judged (monitor.min_rows).",
        f"A feature (or the score) drifts when its PSI reaches {m['psi_threshold']:g} (monitor.psi_threshold) and its "
        f"test's p-value is below {m['ks_pvalue']:g} (monitor.ks_pvalue), or its null rate rises by "
        f"{m['null_rate_change']:g} (monitor.null_rate_change); retraining is due when {m['min_drifted_features']} "
        "or more features drift (monitor.min_drifted_features) or the score does.",
    ]
    floor = m["performance_floor"]
    if floor is None:
        out.append("No performance floor on a labelled batch (monitor.performance_floor is null).")
    elif lower_is_better:
        out.append(f"Labelled batch: retraining is due when the lower 95% bound of `{metric}` lies above {floor:g}.")
    else:
        out.append(f"Labelled batch: retraining is due when the upper 95% bound of `{metric}` lies below {floor:g}.")
    out.append(
        "monitor.update: true. A labelled batch that is due is added as a new data version and the pipeline "
        "retrains; the new version goes through the gate above."
        if m["update"]
        else "monitor.update: false. The report says retraining is due; `medflow monitor --update` adds the batch and "
        "retrains, and the new version goes through the gate above."
    )
    return out


def markdown(plan: dict) -> list[str]:
    lines = [
        "## Change-control plan",
        "Written from the params the gate and `medflow monitor` apply when this version was registered.",
        "",
    ]
    for title, key in (
        ("What may change without a new review", "may_change"),
        ("How a retrained version is verified", "verified_by"),
        ("When it is promoted", "promoted_when"),
        ("What triggers retraining", "retrained_when"),
    ):
        lines += [f"### {title}", *(f"- {s}" for s in plan[key]), ""]
    return lines
