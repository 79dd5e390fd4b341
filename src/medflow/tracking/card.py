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


def _num(v: object, fmt: str = ".4f") -> str:
    return format(v, fmt) if isinstance(v, int | float) and v == v else "" if v is None else str(v)


def gate_markdown(report: dict) -> str:
    """gate.json as a page: aggregates only (counts, metrics, intervals), as everything in it."""
    metric = report["primary_metric"]
    lines = [
        f"# Gate report: {report.get('model_name', '')} v{report.get('version', '')}",
        "",
        f"**Decision: {report['decision']}.** " + " ".join(f"{r}." for r in report["reasons"]),
        "",
    ]
    if "test" not in report:
        return "\n".join([*lines, f"Registration resumed: {report.get('resumed', '')}.", ""])
    t, th = report["test"], report["thresholds"]
    lines += [
        "## Inputs",
        *_table(report.get("inputs", {}), ("input", "value")),
        "",
        f"Test split: {t['rows']} rows, {t['patients']} patients; paired bootstrap over {t['resampled']}.",
        "",
        "## Thresholds",
        *_table({k: "none" if v is None else v for k, v in th.items()}, ("parameter", "value")),
        "",
        f"## Models on the same test rows ({metric}, 95% CI)",
        "| model | " + metric + " | 95% CI |",
        "|---|---|---|",
    ]
    for who, m in report["models"].items():
        lines.append(f"| {who} | {_num(m[metric])} | [{_num(m['ci_low'])}, {_num(m['ci_high'])}] |")
    c = report.get("comparison")
    lines += ["", "## Paired comparison", ""]
    if c is None:
        lines.append(report.get("champion_note") or "No reference to compare with.")
    else:
        lines += [
            f"Δ {metric} = candidate − {c['reference']} = {c['delta']:+.4f}, 95% CI [{c['ci_low']:+.4f}, "
            f"{c['ci_high']:+.4f}] ({c['n_boot']} paired resamples). Rule: {c['test']}, lower bound must exceed "
            f"{c['bound']:+.4f}: {'met' if c['passed'] else 'not met'}.",
        ]
        if report.get("champion_note"):
            lines += ["", report["champion_note"]]
    if report.get("subgroups"):
        lines += ["", f"## Subgroups ({metric}; suppressed groups show their size only)", ""]
        lines += ["| group | patients | candidate | champion |", "|---|---|---|---|"]
        for r in report["subgroups"]:
            lines.append(f"| {r['group']} | {r['patients']} | {_num(r['candidate'])} | {_num(r['champion'])} |")
        for r in report.get("subgroup_regressions", []):
            lines.append(f"\n- {r}")
    return "\n".join(lines) + "\n"
