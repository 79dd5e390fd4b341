"""TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) as a checklist of the model card: each item reported by
medflow (and where in the card), declared by the model's owners in params (`register.card` and its `tripod`), not
applicable to a model card (and why), or missing.

Items are the guideline's numbers; those only a journal article has (title, abstract, introduction, discussion) are
not applicable to a card. Pure functions of the card's JSON: no numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

REPORTED, DECLARED, NOT_APPLICABLE, MISSING = "reported", "declared", "not applicable", "missing"

_ARTICLE = "a journal article's section, not a model card's"


def _declared(key: str, where: str) -> Callable[[dict], tuple[str, str] | None]:
    return lambda card: (DECLARED, where) if (card.get("declared") or {}).get(key) else None


def _has(test: Callable[[dict], object], where: str) -> Callable[[dict], tuple[str, str] | None]:
    return lambda card: (REPORTED, where) if test(card) else None


def _na(why: str) -> Callable[[dict], tuple[str, str]]:
    return lambda card: (NOT_APPLICABLE, why)


def _validation_other_than_random(card: dict) -> tuple[str, str] | None:
    kinds = [v["kind"] for v in card.get("validation") or []]
    if any(not k.startswith("internal") for k in kinds):
        return REPORTED, "Validation (temporal, held-out site or external)"
    return None


# (item, topic, rules tried in order: the first that answers decides; none answers: missing)
ITEMS: list[tuple[str, str, list[Callable[[dict], tuple[str, str] | None]]]] = [
    ("1", "Title", [_na(_ARTICLE)]),
    ("2", "Abstract", [_na(_ARTICLE)]),
    ("3a", "Healthcare context and rationale", [_declared("intended_use", "Intended use")]),
    ("3b", "Target population and intended use in the care pathway", [_declared("population", "Intended use")]),
    ("3c", "Known health inequalities between groups", []),
    ("4", "Objectives (development and/or validation)", [_declared("intended_use", "Intended use")]),
    ("5a", "Data sources", [_declared("setting", "Intended use"), _has(lambda c: c["data"].get("dataset"), "Data")]),
    ("5b", "Dates of data collection", [_declared("setting", "Intended use (setting)")]),
    ("6a", "Setting (care setting, sites)", [_declared("setting", "Intended use")]),
    ("6b", "Eligibility criteria", [_declared("population", "Intended use (population)")]),
    ("6c", "Treatments received", []),
    (
        "7",
        "Data preparation and quality checks",
        [_has(lambda c: "validate_rows_in" in c["data"], "Data (provenance)")],
    ),
    ("8a", "Outcome definition", [_declared("outcome", "Intended use (outcome)")]),
    ("8b", "Outcome assessment (blinding, qualifications)", []),
    ("8c", "Outcome timing (horizon)", [_declared("horizon", "Intended use (horizon)")]),
    (
        "9a",
        "Choice of predictors",
        [_has(lambda c: c["features"]["numeric"] + c["features"]["categorical"], "Features")],
    ),
    ("9b", "Predictor definitions and measurement", []),
    ("9c", "Predictor assessment (blinding, qualifications)", []),
    ("10", "Sample size (rows, events)", [_has(lambda c: c["data"].get("rows"), "Data")]),
    ("11", "Handling of missing data", [_has(lambda c: c.get("method", {}).get("missing_data"), "Method")]),
    ("12a", "How the data were used (split)", [_has(lambda c: c.get("split_policy"), "Data (split policy)")]),
    ("12b", "Predictor handling (preprocessing)", [_has(lambda c: c.get("method", {}).get("preprocessing"), "Method")]),
    ("12c", "Model type, building and tuning", [_has(lambda c: c.get("method", {}).get("model"), "Method")]),
    ("12d", "Heterogeneity across clusters (sites, periods)", [_validation_other_than_random]),
    (
        "12e",
        "Performance measures (discrimination, calibration, clinical utility)",
        [
            _has(
                lambda c: c.get("test_metrics") and c.get("decision_curve"),
                "Test metrics, Calibration, Clinical utility",
            )
        ],
    ),
    (
        "12f",
        "Calibration and model updating",
        [
            _has(
                lambda c: c.get("calibration_fit") or c.get("calibration") or c.get("survival_calibration"),
                "Calibration",
            )
        ],
    ),
    ("12g", "Fairness: subgroups evaluated", [_has(lambda c: c.get("subgroups"), "Subgroups")]),
    ("13", "Class imbalance handling", [_has(lambda c: c.get("method", {}).get("class_imbalance"), "Method")]),
    ("14", "Fairness approaches", [_has(lambda c: c.get("subgroups"), "Subgroups")]),
    ("15", "Model output and decision threshold", [_has(lambda c: c.get("operating_point"), "Operating point")]),
    ("16", "Differences between development and evaluation data", [_validation_other_than_random]),
    ("17", "Ethical approval", []),
    ("18a", "Funding", []),
    ("18b", "Conflicts of interest", []),
    ("18c", "Protocol", []),
    ("18d", "Registration", []),
    ("18e", "Data availability", [_has(lambda c: c["data"].get("data_md5"), "Data (provenance: data version)")]),
    ("18f", "Code availability", [_has(lambda c: c.get("lineage", {}).get("medflow.git_commit"), "Lineage")]),
    ("19", "Patient and public involvement", []),
    (
        "20a",
        "Flow of participants (rows in, excluded)",
        [_has(lambda c: "validate_rows_quarantined" in c["data"], "Data")],
    ),
    ("20b", "Characteristics of participants", []),
    (
        "20c",
        "Development vs evaluation data characteristics",
        [_has(lambda c: c.get("characteristics"), "Development and evaluation data")],
    ),
    ("21", "Participants and events in each analysis", [_has(lambda c: c.get("test_rows"), "Test metrics, Data")]),
    ("22", "Full model specification (access)", [_has(lambda c: c.get("name"), "Lineage (registered model)")]),
    ("23a", "Performance with confidence intervals", [_has(lambda c: c.get("test_metrics"), "Test metrics")]),
    ("23b", "Heterogeneity of performance (subgroups, sites)", [_has(lambda c: c.get("subgroups"), "Subgroups")]),
    (
        "24",
        "Model updating",
        [_has(lambda c: c.get("method", {}).get("recalibration"), "Method"), _na("a new model: none was updated")],
    ),
    ("25", "Interpretation", [_na(_ARTICLE)]),
    ("26", "Limitations", [_has(lambda c: c.get("limitations"), "Limitations")]),
    (
        "27a",
        "Handling of poor-quality or unavailable input data",
        [_has(lambda c: c.get("limitations"), "Limitations (rows scoring refuses, with their reasons)")],
    ),
    ("27b", "User interaction and expertise needed", [_declared("intended_users", "Intended use (intended users)")]),
    ("27c", "Future research", [_na(_ARTICLE)]),
]


def checklist(card: dict, declared: dict[str, str]) -> dict:
    """Every item's status and where it is (or why not); declared: card.tripod, item -> where the owners report
    it, or "n/a: why" for an item they declare not applicable. Coverage: reported or declared, of applicable items."""
    items = []
    for item, topic, rules in ITEMS:
        found = next((r for rule in rules if (r := rule(card))), None)
        said = declared.get(item)
        if found is None and said:
            na = said.lower().startswith("n/a")
            found = (NOT_APPLICABLE, said[4:].strip(" :")) if na else (DECLARED, said)
        status, where = found or (MISSING, "")
        items.append({"item": item, "topic": topic, "status": status, "where": where})
    applicable = [i for i in items if i["status"] != NOT_APPLICABLE]
    covered = sum(i["status"] in (REPORTED, DECLARED) for i in applicable)
    return {
        "guideline": "TRIPOD+AI (BMJ 2024;385:e078378)",
        "items": items,
        "applicable": len(applicable),
        "covered": covered,
        "coverage": round(covered / len(applicable), 4) if applicable else 1.0,
        "declarations": declared,
    }


def markdown(tripod: dict) -> list[str]:
    lines = [
        "## TRIPOD+AI checklist",
        f"{tripod['guideline']}: {tripod['covered']} of {tripod['applicable']} applicable items reported or declared "
        f"({tripod['coverage']:.0%}).",
        "",
        "| item | topic | status | where / why |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i['item']} | {i['topic']} | {i['status']} | {i['where']} |" for i in tripod["items"]]
    return [*lines, ""]
