"""The model card: Markdown built from names, counts and metrics only, never from row values."""

from __future__ import annotations

from medflow.data.features import Schema
from medflow.tracking.gate import Decision


def _table(rows: dict[str, object], head: tuple[str, str]) -> list[str]:
    out = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    for k, v in rows.items():
        out.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return out


def model_card(
    *,
    name: str,
    version: str,
    schema: Schema,
    dataset: str,
    rows: dict[str, int],
    metrics: dict[str, float],
    primary_metric: str,
    decision: Decision,
    lineage: dict[str, str],
) -> str:
    def names(cols: list[str]) -> str:
        return ", ".join(f"`{c}`" for c in cols) or "none"

    excluded = [f"`{c}` ({why})" for c, why in sorted(schema.dropped.items())]
    lines = [
        f"# Model card: {name} v{version}",
        "",
        "## Intended use",
        f"{schema.task.capitalize()} classification of `{schema.target}` ({', '.join(schema.classes)}) from "
        "tabular features, as decision support for research and quality-improvement work. Not a medical "
        "device: every prediction needs review by a qualified clinician.",
        "",
        "## Data",
        f"Dataset: `{dataset}`.",
        "",
        *_table(rows, ("split", "rows")),
        "",
        "## Features",
        f"Numeric ({len(schema.numeric)}): {names(schema.numeric)}.",
        "",
        f"Categorical ({len(schema.categorical)}): {names(schema.categorical)}.",
        "",
        f"Excluded: {', '.join(excluded) or 'none'}.",
        "",
        "## Test metrics",
        f"Primary metric: `{primary_metric}`.",
        "",
        *_table(metrics, ("metric", "value")),
        "",
        "## Gate decision",
        f"{'Promoted to `champion`' if decision.promoted else 'Not promoted (alias `challenger`)'}: {decision.reason}.",
        "",
        "## Lineage",
        *_table(lineage, ("tag", "value")),
        "",
        "## Limitations",
        "- Evaluated on one held-out split of one dataset; performance on other sites, devices or "
        "populations is unknown until measured there.",
        "- Inputs outside the training ranges and unseen categories are scored without warning "
        "(unseen categories encode as all zeros).",
        "- Probabilities are not calibrated unless the evaluation report says so.",
        "",
    ]
    return "\n".join(lines)
