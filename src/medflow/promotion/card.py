"""The model card (each version's description) and the registered model's own description: Markdown built from
names, counts and metrics only, never from row values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medflow.evaluation import characteristics
from medflow.promotion import change_control, tripod
from medflow.promotion.gate import Decision

if TYPE_CHECKING:  # registry commands import this module: not numpy and pandas with it
    from medflow.data.features import Schema
    from medflow.params import Params


def _table(rows: dict[str, object], head: tuple[str, str]) -> list[str]:
    out = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    for k, v in rows.items():
        out.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return out


def _what(schema: Schema) -> str:
    """What the model does, as the card's first words say it."""
    if schema.classes:
        return f"{schema.task.capitalize()} classification of `{schema.target}` ({', '.join(schema.classes)})"
    if schema.outcome == "survival":
        return (
            f"Time to the event `{schema.target}` over the follow-up `{schema.time}` (a risk score and survival "
            "probabilities at the horizons, Cox proportional hazards)"
        )
    return f"{schema.task.capitalize()} of `{schema.target}` (a number, predicted in its own units)"


def _inputs(schema: Schema) -> str:
    if schema.kind == "events":
        return "each stay's events in its observation window (Sequences, below)"
    if schema.kind == "signals":
        return "physiological signals (each lead resampled and standardised)"
    return "images" if schema.kind == "image" else "tabular features"


def model_description(schema: Schema, dataset: str, metric: str) -> str:
    return (
        f"{_what(schema)}, trained "
        f"by medflow on `{dataset}`. Alias `champion` is the version in use, `challenger` the latest one that was "
        f"not promoted; each version's description is its model card and its tags hold lineage and the gate "
        f"decision on `{metric}`. Load with `mlflow.pyfunc.load_model('models:/<name>@champion')`."
    )


def split_policy(params: Params, schema: Schema) -> str:
    """How the card says the rows were split."""
    sp = params.split
    unit = "patient (all of a patient's rows in one split)" if schema.patient_id else "row (no patient id)"
    if sp.by == "time":
        how = (
            f"temporal, by `{sp.time_column}` (never a feature): the earliest {1 - sp.val - sp.test:.0%} of "
            f"{unit.split(' (')[0]}s train, the next {sp.val:.0%} validate, the latest {sp.test:.0%} test"
        )
    elif sp.by == "site":
        how = (
            f"by site, `{sp.site_column}` (never a feature): site(s) {', '.join(sp.test_sites)} held out as test; "
            f"the others split by {unit}, validation {sp.val / (1 - sp.test):.0%} of them"
        )
    else:
        how = f"by {unit}, at random: validation {sp.val:.0%}, test {sp.test:.0%}"
    return (
        f"{how}; identical feature rows kept together; seed {params.seed}. "
        + ("The threshold is chosen on validation, every metric " if schema.classes else "Every metric ")
        + "is measured on test."
    )


def card_data(
    *,
    name: str,
    version: str,
    schema: Schema,
    excluded: list[str],
    dataset: str,
    rows: dict[str, int],
    metrics: dict,
    primary_metric: str,
    decision: Decision,
    lineage: dict[str, str],
    gate: dict,
    evaluation: dict,
    counts: dict[str, int],
    split_policy: str,
    environment: dict[str, str],
    tuning: dict | None = None,
    sequence: dict | None = None,
    declared: dict | None = None,
    split_kind: str = "internal: random split by patient",
    method: dict[str, str] | None = None,
    change_plan: dict | None = None,
) -> dict:
    """model_card.json: names, counts, hashes and aggregate metrics only; model_card renders it as Markdown.

    excluded: the columns data.exclude dropped as validate read the table; metrics: evaluate's metrics.json;
    evaluation: its report.json; gate: the gate report (gate.json); tuning: the
    `medflow tune` study whose best trial this model was trained with (medflow.tuning.tuned.study_of), or None;
    sequence: an event model's window, horizon, grid and variables (medflow.sequences.steps.card_section).
    declared: the params' card section (what the model is for, as the people responsible for it state it);
    split_kind: what the test split stands for (random, temporal, held-out site); method: how the model was built
    (model, preprocessing, missing data, class imbalance), in words; change_plan: change_control.plan of the params.
    """
    declared = declared or {}

    def with_ci(key: str) -> dict[str, float]:
        lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        return {"value": metrics[key], **({"ci_low": lo, "ci_high": hi} if lo is not None and hi is not None else {})}

    tested = sorted(k for k in metrics if k.startswith("test_") and not k.endswith(("_ci_low", "_ci_high")))
    threshold = evaluation.get("threshold") or {}
    at_threshold = ("sensitivity", "specificity", "ppv", "npv")
    subgroups = (evaluation.get("subgroups") or {}).get("groups", [])
    card = {
        "name": name,
        "version": version,
        "task": f"{schema.task} classification of `{schema.target}`"
        if schema.classes
        else f"{schema.task} of `{schema.target}`",
        "classes": list(schema.classes),
        "intended_use": (
            f"{_what(schema)} from "
            f"{_inputs(schema)}, as decision support for research and "
            "quality-improvement work. Not a medical device: every prediction needs review by a qualified clinician."
        ),
        "declared": {k: v for k, v in declared.items() if v and k not in ("limitations", "tripod")},
        "method": method or {},
        "data": {
            "dataset": dataset,
            "data_md5": lineage.get("medflow.data_md5"),
            "data_dvc_md5": lineage.get("medflow.data_dvc_md5"),
            "rows": rows,
            **counts,
        },
        "split_policy": split_policy,
        "features": {
            "numeric": list(schema.numeric),
            "categorical": list(schema.categorical),
            "excluded": dict(
                sorted(
                    {
                        **{c: "data.exclude: dropped as the table was read, never validated or used" for c in excluded},
                        **schema.dropped,
                    }.items()
                )
            ),
        },
        **({"sequence": sequence} if sequence else {}),
        "primary_metric": primary_metric,
        "test_metrics": {k.removeprefix("test_"): with_ci(k) for k in tested},
        "test_rows": metrics.get("n_test"),
        "test_patients": metrics.get("n_test_patients"),
        "resampled": evaluation.get("resampled", "patients"),
        "operating_point": None
        if "threshold" not in metrics
        else {
            "threshold": metrics["threshold"],
            "chosen": threshold.get("method"),
            **{k: with_ci(f"test_{k}") for k in at_threshold if f"test_{k}" in metrics},
        },
        "calibration": {
            k: metrics[k]
            for k in ("test_ece", "test_brier", "temperature", "test_ece_scaled", "test_brier_scaled")
            if k in metrics
        },
        "validation": [
            {
                "kind": split_kind,
                "metric": primary_metric.removeprefix("test_"),
                **with_ci(primary_metric),
                "rows": metrics.get("n_test"),
            }
        ]
        if primary_metric in metrics
        else [],
        "calibration_fit": evaluation.get("calibration_fit"),
        # A survival model's: predicted survival against Kaplan-Meier by risk group at each horizon.
        "survival_calibration": calibrated if isinstance(calibrated := evaluation.get("calibration"), list) else None,
        "decision_curve": evaluation.get("decision_curve"),
        "characteristics": evaluation.get("characteristics"),
        "explanations": evaluation.get("explanations"),
        "permutation_importance": evaluation.get("permutation_importance"),
        "saliency": evaluation.get("saliency"),
        "subgroups": subgroups,
        "gate": {
            "decision": "promoted" if decision.promoted else "not promoted",
            "reason": decision.reason,
            "report": ["gate.md", "gate.json"],
            "comparison": gate.get("comparison"),
        },
        "candidate": gate.get("models", {}).get("candidate"),
        **({"lower_is_better": True} if gate.get("lower_is_better") else {}),
        "baselines": {
            k.removeprefix("baseline "): {**v, "delta": gate.get("baseline_deltas", {}).get(k)}
            for k, v in gate.get("models", {}).items()
            if k.startswith("baseline")
        },
        **({"probe_train_rows": gate["probe_train_rows"]} if gate.get("probe_train_rows") else {}),
        "tuning": tuning,
        "change_control": change_plan,
        "limitations": [
            *declared.get("limitations", []),
            "Evaluated on one held-out split of one dataset; performance on other sites, devices or populations is "
            "unknown until measured there.",
            "Measured only on inputs like the training split's; rows that scoring refuses (a missing feature column, "
            "text in a numeric column, a value outside the training range) get no "
            + ("probability." if schema.classes else "prediction."),
            "Probabilities are not calibrated unless the calibration section says so; the temperature is reported, "
            "not applied."
            if schema.classes and not (method or {}).get("recalibration")
            else "Probabilities are recalibrated on the validation split (Method); calibration on other sites is "
            "unknown until measured there."
            if schema.classes
            else "Calibration-in-the-large and the calibration slope are measured on test; nothing recalibrates."
            if schema.outcome == "regression"
            else "Survival probabilities assume proportional hazards; calibration by risk group at each horizon is "
            "measured on test (the evaluation report); nothing recalibrates.",
            "Subgroups are only those named in evaluate.subgroups; groups under the minimum size show no metrics.",
        ],
        "environment": environment,
        "lineage": lineage,
    }
    card["tripod"] = tripod.checklist(card, declared.get("tripod") or {})
    return card


def _sequence(s: dict) -> list[str]:
    units = ", ".join(f"`{v}` ({u})" for v, u in s["variables"].items())
    return [
        "## Sequences",
        f"Observation window: the {s['window_hours']:g} hours before each stay's prediction time, in "
        f"{s['bins']} bins of {s['bin_hours']:g} h (values carried forward, masks, hours since the last value); "
        f"outcome horizon: {s['horizon_hours']:g} hours after it. Variables (canonical unit): {units}. The features "
        "above are window aggregates, read by the baselines; the sequence model reads the grid.",
        "",
        "Events: " + ", ".join(f"{n:,} {what}" for what, n in s["events"].items()) + ".",
        "",
    ]


def _ci(m: dict) -> str:
    if "ci_low" in m:
        return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
    return f"{m['value']:.4f}" if isinstance(m["value"], float) else str(m["value"])


def model_card(card: dict) -> str:
    def names(cols: list[str]) -> str:
        return ", ".join(f"`{c}`" for c in cols) or "none"

    f, d, g = card["features"], card["data"], card["gate"]
    excluded = [f"`{c}` ({why})" for c, why in f["excluded"].items()]
    provenance = {k: v for k, v in d.items() if k not in ("dataset", "rows") and v is not None}
    lines = [
        f"# Model card: {card['name']} v{card['version']}",
        "",
        "## Intended use",
        *_declared(card.get("declared") or {}),
        card["intended_use"],
        "",
        *_coverage(card.get("tripod")),
        "## Data",
        f"Dataset: `{d['dataset']}`.",
        "",
        *_table(d["rows"], ("split", "rows")),
        "",
        *_table(provenance, ("provenance", "value")),
        "",
        f"Split policy: {card['split_policy']}",
        "",
        "## Features",
        f"Numeric ({len(f['numeric'])}): {names(f['numeric'])}.",
        "",
        f"Categorical ({len(f['categorical'])}): {names(f['categorical'])}.",
        "",
        f"Excluded: {', '.join(excluded) or 'none'}.",
        "",
        *(_sequence(card["sequence"]) if "sequence" in card else []),
        "## Test metrics",
        f"Primary metric: `{card['primary_metric']}`. Intervals: 95% bootstrap over {card['resampled']} "
        f"({card['test_patients'] or '?'} patients, {card['test_rows'] or '?'} test rows).",
        "",
        *_table({k: _ci(v) for k, v in card["test_metrics"].items()}, ("metric", "value [95% CI]")),
        "",
        *_validation(card.get("validation") or []),
    ]
    op = card["operating_point"]
    if op:
        lines += [
            "## Operating point",
            f"Threshold {op['threshold']:.4f} ({op.get('chosen') or 'chosen on validation'}).",
            "",
        ]
        lines += [*_table({k: _ci(v) for k, v in op.items() if isinstance(v, dict)}, ("at the threshold", "value")), ""]
    if card["calibration"] or card.get("calibration_fit"):
        fit = card.get("calibration_fit") or {}
        slope = {
            k: _ci({"value": fit[k], "ci_low": fit[f"{k}_ci_low"], "ci_high": fit[f"{k}_ci_high"]})
            for k in ("calibration_intercept", "calibration_slope")
            if k in fit
        }
        if fit.get("resamples_without_fit"):
            slope["resamples without a finite fit (left out)"] = fit["resamples_without_fit"]
        lines += ["## Calibration", *_table({**slope, **card["calibration"]}, ("measure", "value [95% CI]")), ""]
    if card.get("survival_calibration"):
        said = "Mean predicted survival against the Kaplan-Meier estimate of each risk group (1: lowest risk), on test."
        lines += ["## Calibration", said, "", *survival_calibration_table(card["survival_calibration"]), ""]
    if card["subgroups"]:
        p = card["primary_metric"].removeprefix("test_")
        lines += ["## Subgroups", f"| group | patients | {p} [95% CI] |", "|---|---|---|"]
        for r in card["subgroups"]:
            value = f"{r[p]:.4f} [{r[p + '_ci_low']:.4f}, {r[p + '_ci_high']:.4f}]" if p in r else "suppressed"
            lines.append(f"| {r['group']} | {r['patients']} | {value} |")
        lines.append("")
    verdict = "Promoted to `champion`" if g["decision"] == "promoted" else "Not promoted"
    lines += [
        "## Gate decision",
        f"{verdict}: {g['reason']}.",
        "",
        "Gate report: [gate.md](gate.md) ([gate.json](gate.json)), artifacts of this version's run.",
        "",
    ]
    if "registry" in card:
        lines += _registry(card["registry"])
    if "audit" in card:
        lines += _audit(card["name"], card["version"], card["audit"])
    if card["baselines"]:
        lines += _baselines(card)
    lines += _method(card.get("method") or {})
    dca = card.get("decision_curve")
    if dca:
        at = f" at {dca['horizon']:g}" if dca.get("horizon") is not None else ""
        lines += [
            "## Clinical utility (decision curve)",
            f"Net benefit on test{at} against treating all and none ({dca['method']}; plot "
            "`evaluation/decision_curve.png`); the model helps where its net benefit exceeds both.",
            "",
            *decision_table(dca),
            "",
        ]
    lines += _explanations(card.get("explanations"), card.get("permutation_importance"))
    lines += _saliency(card.get("saliency"))
    # Long (a row per feature and category), so after what the registry's 5,000 characters must show.
    if card.get("characteristics"):
        lines += ["## Development and evaluation data", *characteristics.markdown(card["characteristics"]), ""]
    if card.get("change_control"):
        lines += change_control.markdown(card["change_control"])
    if card.get("tripod"):
        lines += tripod.markdown(card["tripod"])
    lines += [
        "## Limitations",
        *(f"- {x}" for x in card["limitations"]),
        "",
        "## Training environment",
        *_table(card["environment"], ("component", "version")),
        "",
        "## Lineage",
        *_table(card["lineage"], ("tag", "value")),
        "",
    ]
    return "\n".join(lines)


def _saliency(saliency: dict | None) -> list[str]:
    """A few test images with their saliency maps, named by rank and classes (evaluation/saliency.py)."""
    if not saliency:
        return []
    lines = [
        "## Explanations (saliency maps)",
        f"{len(saliency['cases'])} test images picked by the rank of the model's confidence, never by patient or "
        f"file, each beside its attribution map laid over it: {saliency['method']}.",
        "",
        "| # | case | true | predicted | confidence | plot |",
        "|---|---|---|---|---|---|",
    ]
    for c in saliency["cases"]:
        lines.append(
            f"| {c['rank']} | {c['kind']} | {c['true']} | {c['predicted']} | {c['confidence']:.4f} | "
            f"`evaluation/{c['file']}` |"
        )
    return [*lines, ""]


def _coverage(checklist: dict | None) -> list[str]:
    if not checklist:
        return []
    missing = [i["item"] for i in checklist["items"] if i["status"] == tripod.MISSING]
    return [
        f"Reporting: {checklist['guideline']}, {checklist['covered']} of {checklist['applicable']} applicable items "
        f"reported or declared ({checklist['coverage']:.0%}); missing: {', '.join(missing) or 'none'} (checklist "
        "below).",
        "",
    ]


def _method(method: dict) -> list[str]:
    if not method:
        return []
    return ["## Method", *_table({k.replace("_", " "): v for k, v in method.items()}, ("", "how")), ""]


def _validation(rows: list[dict]) -> list[str]:
    """This version's internal test beside every external evaluation logged on it (medflow evaluate-external)."""
    if not rows:
        return []
    lines = ["## Validation", "| validation | metric | value [95% CI] | rows |", "|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['metric']} | {_ci(r)} | {r.get('rows') or '?'} |" for r in rows]
    return [*lines, ""]


# The card section's keys as the card names them.
_DECLARED = {
    "intended_use": "Intended use",
    "population": "Population",
    "setting": "Setting",
    "intended_users": "Intended users",
    "outcome": "Outcome",
    "horizon": "Horizon",
}


def _declared(declared: dict) -> list[str]:
    """The params' card section, as its authors declared it; nothing when they declared nothing."""
    if not declared:
        return [
            "Declared by no one: the params' `register.card` section is empty or describes another dataset "
            "(docs/evidence.md).",
            "",
        ]
    rows = {_DECLARED.get(k, k): v for k, v in declared.items()}
    return ["As declared in params (`register.card`):", "", *_table(rows, ("", "declared")), "", "Stated by medflow:"]


def four(x: float) -> str:
    """x to 4 decimals, a value that rounds to zero shown as 0.0000, not -0.0000."""
    return f"{round(x, 4) + 0.0:.4f}"


def _explanations(ex: dict | None, perm: dict | None) -> list[str]:
    """The card's global explanations: with permutation importance, its top 10 columns beside their mean
    |contribution|; without it, the top 10 by mean |contribution|. Column names and aggregates only."""
    if not ex and not perm:
        return []
    lines = ["## Explanations (global)"]
    if ex:
        lines.append(
            f"Mean absolute contribution to the log-odds per input column on {ex['rows']} test rows, by {ex['method']} "
            "(plot `evaluation/explanations.png`); `medflow predict --explain K` gives each row's K largest."
        )
    if not perm:
        return [
            *lines,
            "",
            "| feature | mean abs. contribution |",
            "|---|---|",
            *(f"| `{r['feature']}` | {r['mean_abs']:.4f} |" for r in ex["features"][:10]),
            "",
        ]
    worse = "rise" if perm["lower_is_better"] else "fall"
    mean_abs = {r["feature"]: r["mean_abs"] for r in ex["features"]} if ex else {}
    lines += [
        f"Permutation importance: the {worse} of test {perm['metric']} when one column is shuffled on {perm['rows']} "
        f"test rows, with its 95% paired patient-bootstrap interval ({perm['n_boot']} resamples; plot "
        "`evaluation/permutation_importance.png`); an interval covering 0 is a column the model does not need.",
        "",
        "| feature | permutation drop [95% CI] | mean abs. contribution |",
        "|---|---|---|",
    ]
    for r in perm["features"][:10]:
        m = mean_abs.get(r["feature"])
        lines.append(
            f"| `{r['feature']}` | {four(r['drop'])} [{four(r['ci_low'])}, {four(r['ci_high'])}] | "
            f"{'' if m is None else f'{m:.4f}'} |"
        )
    return [*lines, ""]


def survival_calibration_table(rows: list[dict]) -> list[str]:
    """evaluation.survival.calibration's rows as a Markdown table."""
    lines = ["| horizon | risk group | rows | predicted | observed (KM) |", "|---|---|---|---|---|"]
    for c in rows:
        if c["predicted"] is None:
            lines.append(f"| {c['horizon']:g} | {c['group'] + 1} | {c['rows']} | suppressed | suppressed |")
        else:
            lines.append(
                f"| {c['horizon']:g} | {c['group'] + 1} | {c['rows']} | {c['predicted']:.3f} | {c['observed']:.3f} |"
            )
    return lines


def decision_table(dca: dict) -> list[str]:
    """The decision curve as a Markdown table, the operating point marked."""
    op = dca.get("operating_point")
    rows = sorted([*dca["table"], *([{**op, "operating": True}] if op else [])], key=lambda r: r["threshold"])
    lines = ["| threshold | model | treat all | treat none |", "|---|---|---|---|"]
    for r in rows:
        mark = " (operating point)" if r.get("operating") else ""
        model, everyone = (f"{r[k]:.4f}" if r[k] is not None else "unknown" for k in ("model", "treat_all"))
        lines.append(f"| {r['threshold']:.3f}{mark} | {model} | {everyone} | {r['treat_none']:.4f} |")
    return lines


def _registry(registry: dict) -> list[str]:
    """Where the version stands now: its aliases and every move of `champion` to or from it, by whom and why."""
    held = ", ".join(f"`{a}`" for a in registry["aliases"]) or "none"
    lines = ["## Registry status", f"Current alias: {held}.", ""]
    if registry["moves"]:
        lines += ["| # | when (UTC) | how | champion | by | why |", "|---|---|---|---|---|---|"]
        for m in registry["moves"]:
            was = f"v{m['from']}" if m["from"] else "none"
            lines.append(f"| {m['n']} | {m['at']} | {m['how']} | {was} → v{m['to']} | {m['who']} | {m['reason']} |")
        lines.append("")
    return lines


def _audit(name: str, version: str, trail: dict) -> list[str]:
    """The version's entries in the registry's audit trail when the card was written, each by number and hash, so a
    reader can find them in an export and check them."""
    lines = [
        "## Audit trail",
        f"The registry's audit trail of `{name}` (`medflow audit show {name} --version {version}`) records every "
        f"change to this version; `medflow audit verify {name}` checks that none was edited or removed.",
        "",
    ]
    if trail["records"]:
        lines += ["| # | when (UTC) | what | by | sha256 |", "|---|---|---|---|---|"]
        for r in trail["records"]:
            lines.append(f"| {r['seq']} | {r['at']} | {r['action']} | {r['who']} | `{r['hash'][:16]}` |")
        lines.append("")
    return lines


def _baselines(card: dict) -> list[str]:
    """This model beside the simple baselines on the same test patients, with the paired CI of each difference."""
    metric = card["primary_metric"].removeprefix("test_")
    t = card.get("tuning")
    lines = ["## This model and the baselines (same train split, same test patients)"]
    if t:
        values = ", ".join(
            f"`{k}`={v:.4g}" if isinstance(v, float) else f"`{k}`={v}" for k, v in t["best_params"].items()
        )
        lines += [
            f"Chosen by `medflow tune`: study `{t['study']}`, best trial {t['best_trial']} of "
            f"{t['trials']['complete']} complete ({t['trials']['pruned']} pruned), {t['metric']} {t['best_value']:.4f} "
            f"on the validation split; the study never read the test split. Tuned values: {values}.",
            "",
        ]
    if card.get("lower_is_better"):
        lines += [
            f"Lower {metric} is better: each Δ is the improvement, baseline − this model, positive when this model "
            "is better.",
            "",
        ]
    change = "baseline − this model" if card.get("lower_is_better") else "this model − baseline"
    lines += [f"| model | {metric} [95% CI] | Δ {change} [95% CI] |", "|---|---|---|"]
    cand = card.get("candidate")
    if cand:
        who = f"this model (tuned: trial {t['best_trial']})" if t else "this model"
        lines.append(
            f"| {who} | {_ci({'value': cand[metric], 'ci_low': cand['ci_low'], 'ci_high': cand['ci_high']})} | |"
        )
    for b, m in card["baselines"].items():
        d = m.get("delta")
        diff = f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d else ""
        lines.append(f"| {b} | {_ci({'value': m[metric], 'ci_low': m['ci_low'], 'ci_high': m['ci_high']})} | {diff} |")
    return [*lines, *_probe(card.get("probe_train_rows")), ""]


def _probe(probe: dict | None) -> list[str]:
    if not probe or not probe["rows"]:  # 0: one class only, no probe
        return []
    return [
        "",
        f"The logistic regression was fitted on {probe['rows']} of {probe['of']} training images"
        + (" (a seeded sample, within train.memory_budget_mb when set)." if probe["rows"] < probe["of"] else "."),
    ]


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
        f"Test split: {t['rows']} rows, {t['patients']} patients; paired bootstrap over {t['resampled']}."
        if t["resampled"] == "patients"
        else f"Test split: {t['rows']} rows; paired bootstrap over {t['resampled']}.",
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
        minus = f"{c['reference']} − candidate (lower is better)" if report.get("lower_is_better") else None
        lines += [
            f"Δ {metric} = {minus or 'candidate − ' + c['reference']} = {c['delta']:+.4f}, 95% CI [{c['ci_low']:+.4f}, "
            f"{c['ci_high']:+.4f}] ({c['n_boot']} paired resamples). Rule: {c['test']}, lower bound must exceed "
            f"{c['bound']:+.4f}: {'met' if c['passed'] else 'not met'}.",
        ]
        if report.get("champion_note"):
            lines += ["", report["champion_note"]]
    if report.get("baseline_deltas"):
        lines += ["", f"## Candidate − each baseline ({metric}, paired 95% CI)", ""]
        lines += ["| baseline | Δ | 95% CI |", "|---|---|---|"]
        for who, d in report["baseline_deltas"].items():
            lines.append(
                f"| {who.removeprefix('baseline ')} | {d['delta']:+.4f} | [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] |"
            )
        lines += _probe(report.get("probe_train_rows"))
    r = report.get("required")
    if r:
        lines.append("")
        lines.append(
            r
            if isinstance(r, str)
            else f"Required superiority over {r['reference']} (register.gate.require_superiority_over): lower bound "
            f"{r['ci_low']:+.4f} must exceed {r['bound']:+.4f}: {'met' if r['passed'] else 'not met'}."
        )
    leak = report.get("leak_check")
    if leak:
        lines += [
            "",
            "## Leakage check",
            "",
            f"Test ROC-AUC {_num(leak['roc_auc'])} reaches validate.leakage_auc: each feature was shuffled on "
            f"{leak['rows_shuffled']} test rows. ROC-AUC lost:",
            "",
            "| feature | ROC-AUC lost |",
            "|---|---|",
        ]
        lines += [f"| {f} | {_num(d)} |" for f, d in leak["drops"].items()]
        for key, what in (("suspects", "suspected leaks"), ("accepted", "accepted (validate.accept_leakage)")):
            if leak[key]:
                lines.append(f"\n{what.capitalize()}: {', '.join(leak[key])}.")
    if report.get("subgroups"):
        lines += ["", f"## Subgroups ({metric}; suppressed groups show their size only)", ""]
        lines += ["| group | patients | candidate | champion |", "|---|---|---|---|"]
        for r in report["subgroups"]:
            lines.append(f"| {r['group']} | {r['patients']} | {_num(r['candidate'])} | {_num(r['champion'])} |")
        for r in report.get("subgroup_regressions", []):
            lines.append(f"\n- {r}")
    return "\n".join(lines) + "\n"
