"""The screens that refuse a table before anything is written: params naming absent columns, undeclared columns
that look like identifiers, features that leak the target, a suite whose roles disagree with params, and (once the
rows are checked) a quarantine too large or concentrated on one group to train on the rest.
"""

from __future__ import annotations

import json
import re

import pandas as pd

from medflow.data import sources
from medflow.data.checks import Check
from medflow.data.columns import ROW_ID
from medflow.data.events import event_flags
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
    unkinded,
    without,
)
from medflow.params import DataParams, Params, ValidateParams, yaml_list
from medflow.paths import Paths
from medflow.privacy import classify
from medflow.validation.outputs import relative


def declared(df: pd.DataFrame, data: DataParams, where: str) -> None:
    """Every column params.data names must be in the table, and none may be both excluded and used."""
    named = {"data.target": [data.target], "data.patient_id": [data.patient_id] if data.patient_id else [],
             "data.identifiers": data.identifiers, "data.time": [data.time] if data.time else []}  # fmt: skip
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


# The words people name a follow-up time with (tokens of a column name, lower case): the time itself, a unit of
# time alone ("days") or with what it runs to or from ("days_to_death", "months_until_relapse", "weeks since").
_TIME_WORDS = {"time", "times", "duration", "followup", "fu", "futime", "fuptime", "lenfol", "lenfu", "survival",
               "surv", "survtime", "stime", "ftime", "dtime", "tte", "los"}  # fmt: skip
_UNITS = {"day", "days", "week", "weeks", "month", "months", "year", "years", "yr", "yrs", "wk", "wks"}
_RUNS = {"to", "until", "till", "since", "from", "in"}
_PHRASES = (("follow", "up"), ("length", "of", "stay"))


def _tokens(name: str) -> list[str]:
    """A column's name as lower-case words: split at anything not a letter or digit and at camelCase humps."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def named_as_time(name: str) -> bool:
    """Whether a column's name says it is a follow-up time, in the words people use for one."""
    words = _tokens(name)
    pairs = list(zip(words, words[1:], strict=False))
    return (
        any(w in _TIME_WORDS for w in words)
        or (len(words) == 1 and words[0] in _UNITS)  # "days", not "age_years"
        or any(a in _UNITS and b in _RUNS or a in _RUNS and b in _UNITS for a, b in pairs)
        or any(tuple(words[i : i + len(p)]) == p for p in _PHRASES for i in range(len(words)))
    )


def leakage(df: pd.DataFrame, kinds: dict[str, str], data: DataParams, vp: ValidateParams) -> dict[str, dict]:
    """{column: {"auc", "rule"}} for features that alone predict the target at leakage_auc or better, and numeric
    features named as a follow-up time that alone predict it at followup_auc or better.

    A follow-up time is how long each patient was watched, and the outcome decides it (an event ends it early,
    the censored are watched to the study's end): as a feature of a binary target it leaks the outcome while
    scoring 0.6-0.9 alone (the packaged survival tables: 0.62-0.98), far below leakage_auc, where a real predictor
    may score as much. Neither sign alone is enough, so both are asked: a name of the words people use for a
    follow-up time, and an effect size (the ROC-AUC the general screen computes anyway) rather than a test's
    p-value, which a large table makes small for any faint relation and a small one never does.
    """
    if data.task == "regression":  # the screen scores classes; a regression target has the gate's shuffle check
        return {}
    # A survival run's follow-up time is its outcome's other half, declared and never a feature.
    kinds = {c: k for c, k in kinds.items() if c != data.time}
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
        elif auc is not None and auc >= vp.followup_auc and col in numeric and named_as_time(col):
            found[col] = {"auc": auc, "rule": FOLLOWUP}
    return found


FOLLOWUP = "a follow-up time by its name and ROC-AUC"


def _refuse_leaks(leaks: dict[str, dict], data: DataParams, vp: ValidateParams, where: str) -> None:
    stopped = {c: v for c, v in leaks.items() if c not in vp.accept_leakage and v["rule"] != FOLLOWUP}
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
    times = {c: v for c, v in leaks.items() if c not in vp.accept_leakage and v["rule"] == FOLLOWUP}
    if times:
        classes = " -P data.positive_class=null" if data.positive_class is not None else ""
        raise ValidationFailed(
            f"{where}: suspected follow-up time in {len(times)} column(s): "
            + "; ".join(f"{c!r} (ROC-AUC {v['auc']:.3f} alone for {data.target!r})" for c, v in times.items())
            + f" is named as a time and tells the outcome apart (validate.followup_auc={vp.followup_auc}): how long "
            "a patient was followed is decided by the outcome, so a model would learn it rather than the patient. "
            f"If this is a time-to-event table, declare it (-P data.task=survival -P data.time={next(iter(times))} "
            f"-P data.event={data.target}{classes}) or "
            f"drop it (-P 'data.exclude={yaml_list([*data.exclude, *times])}'); "
            "if it was measured before the outcome, accept it "
            f"(-P 'validate.accept_leakage={yaml_list([*vp.accept_leakage, *times])}')"
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
        missing = unkinded(suite)
        if missing:
            raise ValidationFailed(
                f"{relative(suite_path, paths.root)}: {len(missing)} column(s) of the column set have no kind in "
                f"meta.medflow.columns: {', '.join(missing)}. Give each a kind (numeric, categorical, text) there, "
                "or delete the suite to infer it again."
            )
    # Privacy and leakage come first: until every column has a role, nothing is written.
    _positive_occurs(df, data, where, totals)
    if data.task == "survival" and totals is None:  # a streamed table's were tallied on every row (streamed.py)
        survival_outcome(df, data, where)
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


MAX_EVENT_VALUES = 10_000
TIME_RULES = (
    "a follow-up time is required",
    "a follow-up time is a number",
    "a follow-up time is finite",
    "a follow-up time is not negative",
    "a follow-up time is above 0",
)


class SurvivalTally:
    """What the rules of a survival table's time and event need to know of its rows, added a frame at a time: the
    whole table in memory, or a streamed one chunk by chunk (validation/streamed.py), with the same one-line
    refusals (column, rule, count; never a value): times missing, unreadable, infinite, negative or 0
    (tasks/survival.py says why 0 is refused), an event column holding other values than 1/0 (or, with
    data.event_value, more than two), and a table without one event."""

    def __init__(self, data: DataParams):
        self.data, self.rows, self.events = data, 0, 0
        self.time_bad = dict.fromkeys(TIME_RULES, 0)
        self.no_event = self.unread = 0
        # The event column's distinct values (two are allowed), up to a bound: a streamed table's memory must not grow.
        self.values: set[str] = set()

    def add(self, df: pd.DataFrame) -> None:
        data = self.data
        raw = df[data.time]
        time = pd.to_numeric(raw, errors="coerce")
        masks = (raw.isna(), time.isna() & raw.notna(), time.abs() == float("inf"), time < 0, time == 0)
        for rule, bad in zip(TIME_RULES, masks, strict=True):
            self.time_bad[rule] += int(bad.sum())
        event = df[data.event].astype("string").str.strip()
        flags = event_flags(df[data.event], data.event_value)
        self.rows += len(df)
        self.no_event += int(event.isna().sum())
        self.unread += int(flags.isna().sum())
        self.events += int(flags.fillna(False).sum())
        if len(self.values) <= MAX_EVENT_VALUES:
            self.values |= set(event.dropna().unique()[: MAX_EVENT_VALUES + 1])

    def check(self, where: str) -> None:
        data = self.data
        for rule, bad in self.time_bad.items():
            if bad:
                raise ValidationFailed(f"{where}: time column {data.time!r}: {bad} row(s) break the rule: {rule}")
        if self.no_event:
            raise ValidationFailed(
                f"{where}: event column {data.event!r}: {self.no_event} row(s) break the rule: an event or "
                "censoring is recorded for every row"
            )
        values = len(self.values)
        if self.unread or (data.event_value is not None and values > 2):
            worded = data.event_value is not None
            rule = "two values, the event and censoring" if worded else "1 (event) or 0 (censored)"
            fix = "" if worded else "; name the value meaning an event with -P data.event_value=VALUE"
            many = f"more than {MAX_EVENT_VALUES}" if values > MAX_EVENT_VALUES else values
            bad = f"{self.unread} row(s)" if self.unread else f"{many} distinct values"
            raise ValidationFailed(f"{where}: event column {data.event!r}: {bad} break the rule: {rule}{fix}")
        if not self.events:
            raise ValidationFailed(
                f"{where}: event column {data.event!r}: all {self.rows} rows are censored (rule: a survival table "
                "needs events; check data.event_value)"
            )


def survival_outcome(df: pd.DataFrame, data: DataParams, where: str) -> None:
    """A survival table's time and event, checked whole (SurvivalTally's rules)."""
    tally = SurvivalTally(data)
    tally.add(df)
    tally.check(where)


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
