"""The screens that refuse a table before anything is written: params naming absent columns, undeclared columns
that look like identifiers, features that leak the target, a suite whose roles disagree with params, and (once the
rows are checked) a quarantine too large or concentrated on one group to train on the rest.
"""

from __future__ import annotations

import json

import pandas as pd

from medflow.data import sources
from medflow.data.checks import Check
from medflow.data.columns import ROW_ID
from medflow.data.numbers import Parsed, typed
from medflow.data.profile import association, numeric_associations, positives
from medflow.data.selection import Groups, concentrated
from medflow.data.suite import (
    Totals,
    ValidationFailed,
    column_kinds,
    infer_suite,
    role_mismatches,
    roles,
    suite_kinds,
    without,
)
from medflow.params import DataParams, Params, ValidateParams, yaml_list
from medflow.paths import Paths
from medflow.privacy import classify
from medflow.validation.outputs import relative


def declared(df: pd.DataFrame, data: DataParams, where: str) -> None:
    """Every column params.data names must be in the table, and none may be both excluded and used."""
    named = {"data.target": [data.target], "data.patient_id": [data.patient_id] if data.patient_id else [],
             "data.identifiers": data.identifiers}  # fmt: skip
    both = sorted(set(data.exclude) & {c for cols in named.values() for c in cols})
    if both:
        raise ValidationFailed(f"{where}: column(s) {both} are in data.exclude and also named in params.data")
    for key, cols in named.items():
        absent = [c for c in cols if c not in df.columns]
        if absent:
            raise ValidationFailed(
                f"{where}: {key} names column(s) {absent} that are not in the table ({len(df.columns)} columns)"
            )


def _refuse_suspects(df: pd.DataFrame, data: DataParams, kinds: dict[str, str], where: str, parsed: Parsed) -> None:
    # Every other column is screened as text, whatever kind it was taken for: notes that mostly repeat read as
    # categories, and a categorical column's values reach the suite, the profile and the model.
    numeric = {c for c, k in kinds.items() if k == "numeric" and parsed.count(c) == parsed.present[c]}
    # The numbers each column parsed to, as parsed once for every check: not parsed again per screen.
    rows = (df[ROW_ID].to_numpy(dtype="float64"), {c: parsed[c].to_numpy() for c in numeric})
    found = classify.suspects(df.drop(columns=ROW_ID), set(roles(data)), numeric, rows, not data.patient_id)
    if found:
        patient = [s.column for s in found if s.repeats]
        cols = [s.column for s in found if not s.repeats]
        fix = [f"-P data.patient_id={patient[0]}"] if patient else []
        fix += [f"-P 'data.identifiers={yaml_list([*data.identifiers, *cols])}'"] if cols else []
        drop = yaml_list([*data.exclude, *patient, *cols])
        raise ValidationFailed(
            f"{where}: {len(found)} undeclared column(s) look like patient identifiers or row numbers (nothing was "
            "written): "
            + "; ".join(map(str, found))
            + f". Declare them ({' '.join(fix)}) to keep them out of every output"
            + (" and each patient's visits in one split" if patient else "")
            + f", or drop them as the table is read (-P 'data.exclude={drop}')"
        )


def leakage(df: pd.DataFrame, kinds: dict[str, str], data: DataParams, vp: ValidateParams) -> dict[str, dict]:
    """{column: {"auc", "rule"}} for features that alone predict the target at leakage_auc or better. The screen
    scores classes; a regression target has none, and the gate's shuffle check is what it has."""
    if data.task == "regression":
        return {}
    df = df[df[data.target].notna()]
    labels = df[data.target].astype("string")
    positive = positives(sorted(labels.dropna().unique()), data)
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    aucs = numeric_associations(df[numeric].astype("float64"), labels.fillna(""), positive)
    for col, kind in kinds.items():
        if kind == "categorical":
            aucs[col] = association(df[col], kind, labels, positive)
    found = {}
    for col, auc in aucs.items():
        if auc is not None and auc >= vp.leakage_auc:
            pairs = df[[col, data.target]].dropna().drop_duplicates()
            recoded = pairs[col].is_unique and pairs[data.target].is_unique
            found[col] = {"auc": auc, "rule": "a 1:1 recoding of the target" if recoded else "single-feature ROC-AUC"}
    return found


def _refuse_leaks(leaks: dict[str, dict], data: DataParams, vp: ValidateParams, where: str) -> None:
    stopped = {c: v for c, v in leaks.items() if c not in vp.accept_leakage}
    if stopped:
        raise ValidationFailed(
            f"{where}: suspected target leakage in {len(stopped)} column(s): "
            + "; ".join(
                f"{c!r} alone predicts {data.target!r} with ROC-AUC {v['auc']:.3f} ({v['rule']})"
                for c, v in stopped.items()
            )  # fmt: skip
            + f" (validate.leakage_auc={vp.leakage_auc}). If it is recorded after the outcome, drop it "
            f"(-P 'data.exclude={yaml_list([*data.exclude, *stopped])}'); if it is a legitimate predictor, accept it "
            f"(-P 'validate.accept_leakage={yaml_list([*vp.accept_leakage, *stopped])}')"
        )


def decide_suite(
    df: pd.DataFrame, parsed: Parsed, params: Params, paths: Paths, where: str, totals: Totals | None = None
):
    """(suite, created, leaks) for the table df is, or with totals a uniform sample of; fails before anything is
    written when a column looks like an identifier or leaks the target, or the suite disagrees with params."""
    data, vp = params.data, params.validate_
    suite_path = paths.suite(sources.dataset_name(data.source))
    created = not suite_path.exists()
    suite = None if created else without(json.loads(suite_path.read_text()), data.exclude)
    if suite is not None:
        mismatches = role_mismatches(suite, data)
        if mismatches:
            raise ValidationFailed(
                f"{relative(suite_path, paths.root)}: column roles differ from params.data: "
                f"{'; '.join(mismatches)}. Fix params or the suite's meta.medflow.columns, or delete the suite "
                "to infer it again."
            )
    # Privacy and leakage come first: until every column has a role, nothing is written.
    _positive_occurs(df, data, where, totals)
    inferred = column_kinds(df, data, vp, parsed)
    _refuse_suspects(df, data, inferred, where, parsed)
    # Columns the suite does not know yet (a new export field) are judged by their inferred kind.
    kinds_now = inferred if suite is None else inferred | {c: k for c, k in suite_kinds(suite).items() if c in df}
    leaks = leakage(typed(df, kinds_now, parsed), kinds_now, data, vp)
    _refuse_leaks(leaks, data, vp, where)
    if suite is None:
        dataset = sources.dataset_name(data.source)
        suite = infer_suite(df, data, vp, name=dataset, source=where, parsed=parsed, totals=totals)
    return suite, created, leaks


def _positive_occurs(df: pd.DataFrame, data: DataParams, where: str, totals: Totals | None) -> None:
    # A positive class the target never takes leaves the leakage screen no positive row to score.
    if data.positive_class is None or data.target not in df:
        return
    counted = totals.counts.get(data.target) if totals is not None else None
    values = counted.index if counted is not None else df[data.target].dropna().unique()
    classes = sorted({str(v).strip() for v in values})
    if len(classes) > 1 and data.positive_label(classes) is None:  # fewer classes have an error of their own
        raise ValidationFailed(
            f"{where}: data.positive_class={data.positive_class!r} never occurs in target column {data.target!r} "
            f"(values: {classes[:10]}); set it to one of them"
        )


def refuse_selection(groups: Groups, checks: list[Check], rows: int, held: int, vp: ValidateParams, where: str):
    """Stops when the quarantine takes more than validate.max_quarantine of the rows, or concentrates on a group."""
    rules = sorted(((len(c.row_ids), c.rule) for c in checks if c.level == "row" and c.row_ids), reverse=True)
    most = f"; most for {rules[0][1]} ({rules[0][0]} rows)" if rules else ""
    fix = (
        "Read the reasons in artifacts/validate/quarantine.csv and fix the source (a column written two ways, a "
        "unit, an export cut short); once reviewed, raise the limit (-P validate.max_quarantine=...)"
    )
    if held > vp.max_quarantine * rows:
        raise ValidationFailed(
            f"{where}: quarantine takes {held} of {rows} rows ({held / rows:.1%}), more than "
            f"validate.max_quarantine={vp.max_quarantine:g}{most}; training on the rest would bias the model. {fix}"
        )
    found = concentrated(groups, rows, held, vp.max_quarantine, vp.small_count)
    if found:
        raise ValidationFailed(
            f"{where}: quarantine takes {held} of {rows} rows ({held / rows:.1%}), concentrated where "
            f"{'; '.join(found[:3])} (more than validate.max_quarantine={vp.max_quarantine:g} of the group){most}; "
            f"training on the rest would leave that group out. {fix}"
        )
