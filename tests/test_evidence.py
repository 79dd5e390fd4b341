"""Evidence a clinical reviewer signs (issue 26): the declared intended use, calibration intercept and slope, the
decision curve, and the card that shows them."""

import json

import numpy as np
import pytest
from test_register import cohort, make_project, params_for, train

from medflow.evaluation import decision_curve
from medflow.evaluation.calibration import logistic_calibration, smoothed_curve
from medflow.params import Params
from medflow.steps import register


def distorted(n=2000, power=2.0, shift=0.0, seed=0):
    """Labels drawn from true risks, and a model's risks with the logit multiplied by `power` (too extreme) and
    `shift` added (risks overestimated)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.2, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return y, 1 / (1 + np.exp(-(power * logit + shift)))


def test_the_calibration_slope_finds_predictions_too_extreme_and_the_intercept_risks_overestimated():
    y, p = distorted()
    fit = logistic_calibration(y, p, np.arange(len(y)) // 2, n_boot=100, seed=0)
    assert fit["calibration_slope_ci_low"] < 0.5 < fit["calibration_slope_ci_high"] < 0.6
    # A confident network's float32 probabilities reach exactly 0 and 1: still a finite fit.
    sure = logistic_calibration(y, np.where(p > 0.99, 1, np.where(p < 0.01, 0, p)).astype("float32"), None, 100, 0)
    assert np.isfinite(list(sure.values())).all() and all(abs(v) < 50 for k, v in sure.items() if "intercept" in k)
    # A near-perfect model: resamples without its two overlapping rows are separated, with no finite fit.
    p = np.linspace(0.01, 0.99, 80)
    y = (p > 0.5).astype(int)
    y[[39, 40]] = y[[40, 39]]
    near = logistic_calibration(y, p, None, 200, 0)
    assert near["resamples_without_fit"] > 20
    assert all(abs(v) < 100 for k, v in near.items() if k.startswith("calibration_slope")), near
    y, p = distorted(power=1.0, shift=1.0)
    shifted = logistic_calibration(y, p, None, n_boot=100, seed=0)
    assert shifted["calibration_intercept_ci_low"] < -1 < shifted["calibration_intercept_ci_high"] < -0.8
    assert shifted["calibration_slope_ci_low"] < 1 < shifted["calibration_slope_ci_high"]
    curve = smoothed_curve(*distorted())
    assert len(curve["predicted"]) == 50 and all(0 <= v <= 1 for v in curve["observed"])
    # Too extreme: the smoothed observed rate lies above the prediction at the low end, below it at the high end.
    assert curve["observed"][0] > curve["predicted"][0] and curve["observed"][-1] < curve["predicted"][-1]


def test_the_resamples_vectorised_fits_are_statsmodels_fits():
    """The bootstrap fits all resamples at once (calibration._draw_fits); each must be the statsmodels GLM and brentq
    answer of _fits on that resample: the same resamples without a fit, the same intercept and slope. Where float32
    risks of exactly 0 and 1 leave the log-likelihood flat along a ridge, any point on it is a maximum: there the
    fit is held to statsmodels' log-likelihood instead of its slope."""
    import statsmodels.api as sm

    from medflow.evaluation import calibration
    from medflow.evaluation.metrics import resample_weights
    from medflow.models.recalibration import logit

    def loglik(y, lp, w, beta):
        eta = beta[0] + beta[1] * lp
        return float((w * (y * eta - np.logaddexp(0, eta))).sum())

    rng = np.random.default_rng(7)
    slopes = 0
    for case in range(36):
        n = int(rng.integers(8, 250))
        z = rng.normal(0, rng.uniform(0.3, 4), n)
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(float)
        p = 1 / (1 + np.exp(-(rng.uniform(0.05, 3) * z + rng.normal(0, 2))))
        saturated = case % 4 == 0
        if saturated:
            p = np.where(p > 0.99, 1, np.where(p < 0.01, 0, p)).astype("float32")
        lp = logit(p)
        w = next(resample_weights(None, n, 60, case))
        ours = calibration._draw_fits(y, lp, w)
        theirs = np.array([calibration._fits(y, lp, row) for row in w])
        assert (np.isnan(ours) == np.isnan(theirs)).all(), case
        ok = ~np.isnan(theirs)
        assert ours[ok[:, 0], 0] == pytest.approx(theirs[ok[:, 0], 0], abs=1e-8), case
        slopes += ok[:, 1].sum()
        if not saturated:
            assert ours[ok[:, 1], 1] == pytest.approx(theirs[ok[:, 1], 1], rel=1e-4, abs=1e-6), case
            continue
        rows = np.flatnonzero(ok[:, 1])
        glms = calibration._draw_glms(y, lp, w[rows], ours[rows, 0])
        for row, glm in zip(rows, glms, strict=True):
            x = np.column_stack([np.ones(n), lp])
            fit = sm.GLM(y, x, family=sm.families.Binomial(), freq_weights=w[row]).fit()
            assert loglik(y, lp, w[row], glm) >= loglik(y, lp, w[row], fit.params) - 1e-7, (case, row)
    assert slopes > 1000


def test_net_benefit_is_dcurves_and_equals_the_formula_on_a_table():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=300)
    y = (rng.uniform(size=300) < p).astype(int)
    thresholds = decision_curve.grid((0.1, 0.9, 0.2))
    assert thresholds == [0.1, 0.3, 0.5, 0.7, 0.9]
    for row in decision_curve.net_benefit(y, p, thresholds):
        t, called = row["threshold"], p >= row["threshold"]
        tp, fp = (called & (y == 1)).mean(), (called & (y == 0)).mean()
        assert row["model"] == pytest.approx(tp - fp * t / (1 - t))
        assert row["treat_all"] == pytest.approx(y.mean() - (1 - y.mean()) * t / (1 - t))
        assert row["treat_none"] == 0


def test_a_survival_net_benefit_reads_the_events_by_the_horizon_from_kaplan_meier():
    """Vickers et al. 2008: above threshold t, the events by the horizon are the Kaplan-Meier estimate of that group
    (scikit-survival's here), not the events seen: a patient censored before the horizon is neither."""
    from sksurv.nonparametric import kaplan_meier_estimator

    rng = np.random.default_rng(2)
    hazard = rng.uniform(0.05, 0.9, 400)
    onset, censored = rng.exponential(1 / hazard), rng.uniform(0, 4, 400)
    time, event = np.minimum(onset, censored), onset <= censored
    horizon = 1.5
    p = 1 - np.exp(-hazard * horizon)

    def km(rows) -> float:
        at, s = kaplan_meier_estimator(event[rows], time[rows])
        return float(s[np.searchsorted(at, horizon, side="right") - 1])

    for row in decision_curve.net_benefit(event, p, [0.2, 0.4, 0.6], time, horizon):
        t, above = row["threshold"], p >= row["threshold"]
        share, alive = above.mean(), km(above)
        assert row["model"] == pytest.approx(share * (1 - alive) - share * alive * t / (1 - t), abs=1e-9)
        everyone = km(np.ones(len(p), bool))
        assert row["treat_all"] == pytest.approx((1 - everyone) - everyone * t / (1 - t), abs=1e-9)
    # Five patients above 0.6, every one with the event before the horizon: dcurves has no value there; Kaplan-Meier
    # says none of them survives it, so the net benefit is their share. Followed no further than a censoring, unknown.
    t5, e5 = np.r_[time, [0.5, 1.0, 1.2, 1.3, 1.4]], np.r_[event, [True] * 5]
    high = decision_curve.net_benefit(e5, np.r_[p * 0.5, [0.95] * 5], [0.6, 0.9], t5, horizon)
    assert [r["model"] for r in high] == pytest.approx([5 / 405, 5 / 405])
    e5[-1] = False
    assert decision_curve.net_benefit(e5, np.r_[p * 0.5, [0.95] * 5], [0.9], t5, horizon)[0]["model"] is None
    t5[-1] = t5[-2]  # an event and a censoring at the group's last time: some of it is still event-free, unknown
    assert decision_curve.net_benefit(e5, np.r_[p * 0.5, [0.95] * 5], [0.9], t5, horizon)[0]["model"] is None


def test_development_and_evaluation_rows_are_summarised_apart_and_no_rare_value_is_named_or_counted():
    """TRIPOD+AI 20c: each feature and the outcome in development (train and validation) and evaluation (test) rows,
    by tableone. A level of fewer than small_count rows in a group joins OTHER; where one is still that rare, the
    variable is suppressed in that group, as the other levels' counts would give it away; a number with that few
    values in a group is suppressed, and a feature named like the outcome is a feature."""
    import pandas as pd

    from medflow.data.columns import LABEL, SPLIT
    from medflow.data.features import OTHER, Schema
    from medflow.evaluation import characteristics

    rng = np.random.default_rng(3)
    n = 300
    i = np.arange(n)
    split = np.where(i < 240, "train", "test")
    split[200:240] = "val"
    age = np.where(split == "test", rng.normal(70, 5, n), rng.normal(60, 8, n))
    df = pd.DataFrame({
        "age": age,
        "lab": np.where((split != "test") | (i == 250), rng.normal(1, 0.2, n), np.nan),  # one value in test
        "outcome": rng.normal(size=n),  # a feature, not the label
        "site": np.where(np.isin(i, [0, 100, 250]), "rural", np.where(i % 2, "north", "south")),
        "ward": [f"w{k}" for k in i],  # every level one row
        "sex": np.where((split == "test") & (i != 252), "M", np.where(i % 3 == 0, "F", "M")),
        "hiv": np.isin(i, [7, 260]).astype(float),  # one patient in each group: a mean would count them
        LABEL: rng.integers(0, 2, n), SPLIT: split,
    })  # fmt: skip
    df.loc[[1, 2, 3], "age"] = np.nan
    schema = Schema(target="y", classes=["no", "yes"], numeric=["age", "lab", "outcome", "hiv"],
                    categorical=["site", "ward", "sex"])  # fmt: skip
    found = characteristics.development_vs_evaluation(df, schema, small_count=5)
    assert found["groups"] == {"development": 240, "evaluation": 60}
    rows = {(r["variable"], r["level"]): r for r in found["rows"]}
    dev, test = df["age"][split != "test"].dropna().to_numpy(), age[split == "test"]
    assert rows["age", None]["missing"] == "<5"  # 3 rows without an age
    assert rows["age", None]["development"] == f"{dev.mean():.2f} ({dev.std(ddof=1):.2f})"
    assert rows["age", None]["evaluation"] == f"{test.mean():.2f} ({test.std(ddof=1):.2f})"
    pooled = np.sqrt((dev.var(ddof=1) + test.var(ddof=1)) / 2)
    assert float(rows["age", None]["smd"]) == pytest.approx((test.mean() - dev.mean()) / pooled, abs=1e-3)
    assert rows["lab", None]["development"] == rows["lab", None]["evaluation"] == "suppressed"
    assert ("outcome", None) in rows and {lvl for v, lvl in rows if v == "outcome"} == {None, "no", "yes"}
    levels = {v: {lvl for w, lvl in rows if w == v} for v in ("site", "ward", "sex", "hiv")}
    assert levels == {"site": {"north", "south", OTHER}, "ward": {OTHER}, "sex": {"M", OTHER}, "hiv": {"0.0", OTHER}}
    assert {rows["hiv", lvl][g] for lvl in levels["hiv"] for g in ("development", "evaluation")} == {"suppressed"}
    # rural (2 development rows, 1 test row) is OTHER, still rare in both: site is suppressed in both.
    assert all(rows["site", lvl][g] == "suppressed" for lvl in levels["site"] for g in ("development", "evaluation"))
    assert rows["ward", OTHER]["development"] == "240 (100.0)"
    # One woman among the test rows: sex is suppressed there, shown for development.
    assert rows["sex", "M"]["evaluation"] == "suppressed" and rows["sex", "M"]["development"] != "suppressed"
    text = "\n".join(characteristics.markdown(found))
    assert "| age | mean (SD) |" in text and "rural" not in text and "w17" not in text
    assert characteristics.development_vs_evaluation(df[split != "test"].iloc[:-1], schema, 5) is None


def test_dca_thresholds_must_be_a_range_of_probabilities():
    with pytest.raises(ValueError, match="0 < from <= to < 1"):
        Params.model_validate({"evaluate": {"dca_thresholds": [0.5, 1.2, 0.1]}})


DECLARED = {
    "intended_use": "Research demonstration only.",
    "population": "Adults in the synthetic cohort.",
    "outcome": "The label y.",
}


@pytest.fixture(scope="module")
def proj(tmp_path_factory, migrated_mlflow_db):
    return make_project(tmp_path_factory.mktemp("evidence"), migrated_mlflow_db, cohort())


def with_card(params: Params, card: dict, required: list[str], n_boot: int = 1000) -> Params:
    raw = params.as_dict()
    raw["evaluate"]["n_boot"] = n_boot
    raw["register"]["card"] = card
    raw["register"]["require_card_fields"] = required
    return Params.model_validate(raw)


def test_a_card_missing_required_fields_is_refused_in_one_line_naming_them(proj):
    base = train(proj, "declared", 0.95)
    params = with_card(base, DECLARED, ["intended_use", "population", "setting", "horizon"])
    summary = register.run(params, proj)
    assert not summary["promoted"]
    assert summary["reason"].startswith(
        "register.card.setting, register.card.horizon empty (register.require_card_fields)"
    )
    assert "\n" not in summary["reason"]
    card = (proj.step_dir("register") / "model_card.md").read_text()
    top = card.split("## Data")[0]
    assert "| Intended use | Research demonstration only. |" in top and "| Outcome | The label y. |" in top
    assert "Reporting: TRIPOD+AI" in top and "## TRIPOD+AI checklist" in card
    assert json.loads((proj.step_dir("register") / "model_card.json").read_text())["declared"] == DECLARED

    # Declarations written for another table are neither shown nor counted; a requirement for another is none.
    elsewhere = with_card(base, {**DECLARED, "dataset": "elsewhere"}, ["intended_use"])
    train(proj, "declared", 0.95)
    assert register.run(elsewhere, proj)["reason"].startswith("register.card.intended_use empty")
    assert "Declared by no one" in (proj.step_dir("register") / "model_card.md").read_text()
    raw = elsewhere.as_dict()
    raw["register"]["require_card_fields"] = {"elsewhere": ["intended_use"]}
    assert Params.model_validate(raw).register.required_card("cohort") == []

    # Filled in, the next version may become champion.
    filled = {**DECLARED, "setting": "Synthetic.", "horizon": "At sampling."}
    train(proj, "declared", 0.95)
    assert register.run(with_card(params_for("declared"), filled, list(filled)), proj)["promoted"]


def split_project(tmp_path, by: dict):
    """A cleaned table of 200 patients (two rows each) with a year and a site column kept aside by clean."""
    import pandas as pd

    from medflow.data.columns import LABEL, PATIENT_KEY, ROW_ID, TIME_OR_SITE
    from medflow.paths import Paths
    from medflow.steps.clean import build_schema

    paths = Paths(root=tmp_path)
    rng = np.random.default_rng(0)
    n = 400
    patient = np.arange(n) // 2
    raw = pd.DataFrame({"a": rng.normal(size=n), "year": 2000 + patient % 10, "site": np.where(patient % 4, "A", "B")})
    params = Params.model_validate({"data": {"target": "y", "patient_id": "pid"}, "split": by})
    column = params.split.time_column or params.split.site_column
    kinds = {"a": "numeric", column: "numeric" if column == "year" else "categorical", "pid": "patient_id"}
    schema = build_schema(kinds, params.data, pd.Series(["no", "yes"] * (n // 2)), split_by=column)
    assert column not in schema.numeric + schema.categorical and "split.by" in schema.dropped[column]
    cleaned = pd.DataFrame({ROW_ID: range(n), PATIENT_KEY: [f"k{p}" for p in patient], "a": raw["a"]})
    cleaned[LABEL] = rng.integers(0, 2, n)
    cleaned[TIME_OR_SITE] = raw[column].astype(float if column == "year" else str).to_numpy()
    paths.cleaned.parent.mkdir(parents=True)
    cleaned.to_parquet(paths.cleaned)
    schema.save(paths.schema)
    return params, paths, raw[column]


def test_split_by_time_tests_on_the_latest_patients_and_by_site_on_the_held_out_site(tmp_path):
    import pandas as pd

    from medflow.steps import split

    params, paths, year = split_project(tmp_path / "time", {"by": "time", "time_column": "year", "test": 0.2})
    assert split.run(params, paths)["by"] == "time"
    where = pd.read_csv(paths.manifest)["split"]
    assert year[where == "train"].max() <= year[where == "val"].min()
    assert year[where == "val"].max() <= year[where == "test"].min() and set(year[where == "test"]) == {2008, 2009}

    by_site = {"by": "site", "site_column": "site", "test_sites": ["B"]}
    params, paths, site = split_project(tmp_path / "site", by_site)
    summary = split.run(params, paths)
    where = pd.read_csv(paths.manifest)["split"]
    assert ((where == "test") == (site == "B")).all() and summary["rows"]["val"] > 0

    params, paths, _ = split_project(tmp_path / "none", {**by_site, "test_sites": ["B", "Z"]})
    with pytest.raises(ValueError, match=r"column 'site', rule: every split.test_sites is a site of the table; 1 is"):
        split.run(params, paths)
    with pytest.raises(ValueError, match="split.by=time needs split.time_column"):
        Params.model_validate({"split": {"by": "time"}})


def default_run_card() -> dict:
    """What the card of `make run` holds, as far as the checklist reads it, with params.yaml's own card section."""
    from pathlib import Path

    from medflow.params import load

    declared = load(Path(__file__).resolve().parents[1] / "params.yaml").register.card.model_dump()
    metric = {"value": 0.99, "ci_low": 0.98, "ci_high": 1.0}
    return {
        "name": "medflow-breast-cancer",
        "declared": {k: v for k, v in declared.items() if v and k not in ("limitations", "tripod")},
        "data": {
            "dataset": "breast_cancer",
            "rows": {"test": 86},
            "validate_rows_in": 569,
            "validate_rows_quarantined": 0,
            "data_md5": "0" * 32,
        },
        "features": {"numeric": ["mean radius"], "categorical": []},
        "method": {"model": "mlp", "preprocessing": "p", "missing_data": "m", "class_imbalance": "c"},
        "split_policy": "random by row",
        "test_metrics": {"roc_auc": metric},
        "test_rows": 86,
        "validation": [{"kind": "internal: random split by patient", "metric": "roc_auc", **metric}],
        "calibration_fit": {"calibration_slope": 1.0},
        "decision_curve": {"table": []},
        "operating_point": {"threshold": 0.5},
        "subgroups": [],
        "limitations": declared["limitations"],
        "lineage": {"medflow.git_commit": "abc"},
    }, declared["tripod"]


def test_the_default_run_covers_most_applicable_tripod_items_and_says_which_are_missing():
    from medflow.promotion import tripod

    card, declared = default_run_card()
    checklist = tripod.checklist(card, declared)
    status = {i["item"]: i["status"] for i in checklist["items"]}
    assert checklist["coverage"] >= 0.8, [i for i, s in status.items() if s == tripod.MISSING]
    assert status["1"] == status["12d"] == tripod.NOT_APPLICABLE and status["17"] == tripod.NOT_APPLICABLE
    assert status["8a"] == tripod.DECLARED and status["12e"] == status["15"] == tripod.REPORTED
    assert status["20c"] == tripod.MISSING
    # Without its owners' declarations, the same card is far from covered.
    assert tripod.checklist(card, {})["coverage"] < 0.7
    lines = tripod.markdown(checklist)
    assert f"{checklist['covered']} of {checklist['applicable']} applicable items" in lines[1]
    assert "| 17 | Ethical approval | not applicable | a public, de-identified data set; no data collected |" in lines


def test_evaluate_external_reports_on_the_version_and_its_card_without_moving_an_alias(proj):
    from mlflow import MlflowClient

    from medflow import tracking
    from medflow.external import evaluate_external

    params = with_card(train(proj, "external", 0.95), {**DECLARED, "tripod": {"17": "n/a: synthetic"}}, [], 200)
    version = register.run(params, proj)["version"]
    before = MlflowClient().get_registered_model("external").aliases
    other = cohort(120)
    other.loc[:9, "a"] = "1000"  # outside the training range: refused, never scored
    other.to_csv(proj.root / "site_b.csv", index=False)

    report = evaluate_external(params, proj, "models:/external@champion", proj.root / "site_b.csv", "site B")
    assert (report["label"], report["refused"], report["evaluated_rows"]) == ("site_B", 10, 110)
    assert report["refused_reasons"] == {"a: outside the training range": 10}
    auc = report["metrics"]["roc_auc"]
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"] and "calibration_slope" in report["calibration_fit"]

    assert MlflowClient().get_registered_model("external").aliases == before
    v = tracking.get_version("external", version)
    assert v.tags["medflow.external.site_B"].startswith(f"roc_auc={auc['value']:.4f}")
    card = tracking.get_description("external", version)
    assert f"| external: site_B | roc_auc | {auc['value']:.4f}" in card and "| internal: random split" in card
    assert any(r["action"] == "version.external" for r in tracking.audit_of_version("external", version))
    logged = {a.path for a in MlflowClient().list_artifacts(v.run_id, "external/site_B")}
    assert {"external/site_B/report.md", "external/site_B/report.json"} <= logged
    written = (proj.root / "artifacts/external" / f"site_B-v{version}" / "report.md").read_text() + card
    assert not [p for p in other["pid"] if p in written]

    # predict --explain 2 on the same table: two contributions per scored row, refused rows still refused.
    import pandas as pd

    from medflow.predict import predict_file

    done = predict_file("models:/external@champion", proj.root / "site_b.csv", proj.root / "scored.csv", explain=2)
    assert (done["ok"], done["refused"]) == (110, 10)
    out = pd.read_csv(proj.root / "scored.csv")
    assert list(out.columns[-6:]) == [
        "explain_1_feature", "explain_1_value", "explain_2_feature", "explain_2_value", "status", "reason"
    ]  # fmt: skip
    ok = out["status"] == "ok"
    assert set(out.loc[ok, "explain_1_feature"]) <= {"a", "b", "c"} and out.loc[~ok, "explain_1_feature"].isna().all()
    assert (out.loc[~ok, "reason"] == "a: outside the training range").all()
    # The model's log-odds rest on `a` (weight 1) far more than on the noise `b` (weight 0.5).
    assert (out.loc[ok, "explain_1_feature"] == "a").mean() > 0.6
    assert (out.loc[ok, "explain_1_value"].abs() >= out.loc[ok, "explain_2_value"].abs()).all()


def test_a_bundled_recalibration_is_fitted_on_validation_and_applied_to_every_probability(tmp_path):
    import torch
    from test_register import SCHEMA

    from medflow.data.features import Preprocessor, coerce_features
    from medflow.evaluation.calibration import fit_recalibration
    from medflow.models.bundle import Predictor, save_bundle
    from medflow.models.tabular import build

    y, p = distorted()
    fitted = fit_recalibration("logistic", y, np.c_[1 - p, p])
    assert fitted["method"] == "logistic" and 0.4 < fitted["slope"] < 0.6
    assert fit_recalibration("temperature", y, np.c_[1 - p, p])["temperature"] > 1.5
    with pytest.raises(ValueError, match="3 classes; rule: logistic recalibration is binary"):
        fit_recalibration("logistic", np.array([0, 1, 2]), np.full((3, 3), 1 / 3))

    rows = coerce_features(cohort(40), SCHEMA)
    pre = Preprocessor(SCHEMA.numeric, SCHEMA.categorical).fit(rows)
    config = {"name": "tabular_mlp", "n_in": len(pre.feature_names), "n_classes": 2, "hidden": [4], "dropout": 0.0}
    torch.manual_seed(0)
    model = build(**config)
    save_bundle(tmp_path / "raw", model, config, pre, SCHEMA)
    save_bundle(tmp_path / "recalibrated", model, config | {"recalibration": fitted}, pre, SCHEMA)
    raw = Predictor(tmp_path / "raw").predict_proba(cohort(40))[:, 1]
    scored = Predictor(tmp_path / "recalibrated").score(cohort(40))
    logit = np.log(raw / (1 - raw))
    expected = 1 / (1 + np.exp(-(fitted["intercept"] + fitted["slope"] * logit)))
    np.testing.assert_allclose(scored["proba_yes"], expected, rtol=1e-5)


def test_integrated_gradients_of_a_linear_model_are_its_weights_times_the_encoded_input(tmp_path):
    import torch
    from test_register import SCHEMA

    from medflow.data.features import Preprocessor, coerce_features
    from medflow.models import explain
    from medflow.models.bundle import Predictor, save_bundle
    from medflow.models.tabular import build

    rows = coerce_features(cohort(40), SCHEMA)
    pre = Preprocessor(SCHEMA.numeric, SCHEMA.categorical).fit(rows)
    config = {"name": "tabular_mlp", "n_in": len(pre.feature_names), "n_classes": 2, "hidden": [], "dropout": 0.0}
    model = build(**config)
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.zero_()
        model.net[0].weight[1, pre.feature_names.index("a")] = 2.0
        model.net[0].weight[0, pre.feature_names.index("b")] = 1.0  # the log-odds are logit 1 - logit 0
    save_bundle(tmp_path, model, config, pre, SCHEMA)
    predictor = Predictor(tmp_path)
    columns, contributions = explain.attributions(predictor, rows)
    x = pre.transform(rows)
    assert columns == ["a", "b", "c"] and explain.method(predictor).startswith("Captum IntegratedGradients")
    np.testing.assert_allclose(contributions[:, 0], 2 * x[:, pre.feature_names.index("a")], atol=1e-4)
    np.testing.assert_allclose(contributions[:, 1], -x[:, pre.feature_names.index("b")], atol=1e-4)
    np.testing.assert_allclose(contributions[:, 2], 0, atol=1e-6)
    ranked = explain.global_importance(columns, contributions)
    assert [r["feature"] for r in ranked] == ["a", "b", "c"]


def test_an_unquoted_tripod_item_number_stops_at_load_not_at_registers_record():
    # DVC sorts the register section's keys to hash it: an int beside "18a" failed the run only at register's record.
    with pytest.raises(ValueError, match=r"register\.card\.tripod[\s\S]*quote the item numbers 14"):
        Params.model_validate({"register": {"card": {"tripod": {14: "n/a: none", "18a": "None"}}}})
    assert Params.model_validate({"register": {"card": {"tripod": {"14": "n/a"}}}}).register.card.tripod == {
        "14": "n/a"
    }


def test_the_change_control_plan_states_the_gate_params_the_register_step_applied(proj):
    def plan() -> str:
        card = (proj.step_dir("register") / "model_card.md").read_text()
        return card.split("## Change-control plan")[1].split("\n## ")[0]

    base = train(proj, "change-control", 0.95, floor=0.99)
    version = register.run(base, proj)["version"]
    before = plan()
    assert "Test `roc_auc` at least 0.99 (register.min_primary)." in before
    assert "lower bound must lie above 0 (superiority, register.gate.test)" in before
    assert "Leak check: at test ROC-AUC 0.995 or more" in before and "`medflow promote NAME VERSION" in before
    assert "PSI reaches 0.2 (monitor.psi_threshold)" in before

    raw = base.as_dict()
    raw["register"]["min_primary"] = 0.85
    raw["register"]["gate"] |= {"test": "non_inferiority", "margin": 0.02}
    # register.* changed on a version that is not champion: the gate decides again and writes the card anew.
    assert register.run(Params.model_validate(raw), proj)["version"] == version
    after = plan()
    assert "lower bound must lie above −0.02 (register.gate.margin) (non-inferiority, register.gate.test)" in after
    assert "at least 0.85 (register.min_primary)" in after and "0.99 (register.min_primary)" not in after
    criteria = json.loads((proj.step_dir("register") / "model_card.json").read_text())["change_control"]["criteria"]
    assert criteria | {"test": "non_inferiority", "margin": 0.02, "min_primary": 0.85} == criteria


@pytest.mark.parametrize("task", ["survival", "regression"])
def test_evaluate_external_measures_a_survival_or_regression_model_with_evaluates_own_metrics(
    task, tmp_path, monkeypatch
):
    """The classifier's flow (row checks, refused rows counted, patient-bootstrap intervals, the record) for the two
    other tabular tasks, each metric the evaluate step's function of the same rows: Harrell's C and the AUC at the
    model's horizons, or MAE; no calibration fit or decision curve, and the task's own primary metric although the
    params name a classifier's."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    import pandas as pd
    import torch

    from medflow import external
    from medflow.data.features import Preprocessor, Schema, coerce_features
    from medflow.evaluation import regression, survival
    from medflow.models.bundle import Predictor, save_bundle
    from medflow.models.tabular import build
    from medflow.paths import Paths

    rng = np.random.default_rng(1)
    n = 160
    a = rng.normal(0, 1, n)
    time = np.ceil(rng.exponential(300 * np.exp(-a))) + 1
    rows = pd.DataFrame({"pid": [f"P{i // 2}" for i in range(n)], "a": a.round(3).astype(str)})
    rows["time"], rows["dead"], rows["y"] = time, (rng.uniform(size=n) < 0.7).astype(int), (2 * a + 1).round(3)
    target = {"survival": "dead", "regression": "y"}[task]
    schema = Schema(target=target, classes=[], numeric=["a"], categorical=[], patient_id="pid", outcome=task,
                    time="time" if task == "survival" else None)  # fmt: skip
    pre = Preprocessor(["a"], []).fit(coerce_features(rows, schema))
    config = {"name": "tabular_mlp", "n_in": len(pre.feature_names), "n_classes": 1, "hidden": [], "dropout": 0.0}
    model = build(**config)
    with torch.no_grad():
        model.net[0].weight.fill_(1.0)
        model.net[0].bias.zero_()
    if task == "survival":
        config["survival"] = {"times": [50.0, 200.0, 400.0], "cumhaz": [0.1, 0.4, 0.9], "shift": 0.0,
                              "horizons": [100, 300]}  # fmt: skip
    else:
        config["target_scale"] = {"mean": 1.0, "std": 2.0}
    save_bundle(tmp_path / "bundle", model, config, pre, schema)
    rows.loc[:4, "a"] = "1e9"  # outside the training range: refused, never scored
    # Scored, but no label to judge them by: each rule counted (rows 5-14), a row breaking two in each.
    if task == "survival":
        rows = rows.astype({"time": object, "dead": object})
        rows.loc[5:9, "time"], rows.loc[9:14, "dead"] = [np.nan, -3, 0, "soon", -1], "unknown"
        unlabelled = {"time: missing, not a number or not above 0": 5, "dead: missing or not an event flag": 6}
    else:
        rows = rows.astype({"y": object})
        rows.loc[5:14, "y"] = ["n/a", "", "high", *["?"] * 7]
        unlabelled = {"y: missing or not a number": 10}
    rows.to_csv(tmp_path / "site_c.csv", index=False)

    @contextmanager
    def registered(name, version):
        yield Predictor(tmp_path / "bundle")

    recorded = []
    monkeypatch.setattr("medflow.tracking.bundles.registered_predictor", registered)
    version = SimpleNamespace(version="3", run_id="r")
    monkeypatch.setattr("medflow.tracking.registry.resolve", lambda uri: ("m", version))
    monkeypatch.setattr(external, "_record", lambda *args: recorded.append(args))
    params = Params.model_validate({"evaluate": {"n_boot": 200}, "data": {"patient_id": "pid"}})
    assert params.evaluate.primary_metric == "roc_auc"
    report = external.evaluate_external(params, Paths(root=tmp_path), "models:/m/3", tmp_path / "site_c.csv", "site C")

    assert (report["task"], report["refused"], report["unlabelled"], report["evaluated_rows"]) == (task, 5, 10, n - 15)
    assert report["refused_reasons"] == {"a: outside the training range": 5} and report["resampled"] == "patients"
    assert report["unlabelled_reasons"] == unlabelled
    assert "calibration_fit" not in report and "decision_curve" not in report and report["threshold"] is None
    kept = rows.iloc[15:].astype({"time": float, "dead": int, "y": float})
    groups = kept["pid"].to_numpy()
    x = kept["a"].astype(float).to_numpy()
    if task == "survival":
        assert report["primary_metric"] == "c_index" and report["horizons"] == [100, 300]
        c = report["metrics"]["c_index"]
        # The model's risk is `a` itself (weight 1, no scaling but the training standardisation, which keeps order).
        assert c["value"] == pytest.approx(survival.harrell_c(kept["time"], kept["dead"], x))
        boot = survival.concordance(kept["time"], kept["dead"], x, groups, None, 200, params.seed)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((boot.ci_low, boot.ci_high))
        assert {"uno_c", "auc_at_100", "auc_at_300", "brier_at_300", "integrated_brier"} <= set(report["metrics"])
        assert "| c_index |" in (tmp_path / "artifacts/external/site_C-v3/report.md").read_text()
        # Labelled rows, none with an event: no C-index to compute, one line naming both columns and the rule.
        rows.iloc[15:].assign(dead=0).to_csv(tmp_path / "censored.csv", index=False)
        rule = r"0 events\); rule: at least monitor.min_rows=\d+ rows and one event"
        with pytest.raises(
            ValueError, match=rf"censored.csv: {n - 15} .*\(a positive 'time' and a 1/0 'dead'\) \({rule}"
        ):
            external.evaluate_external(params, Paths(root=tmp_path), "models:/m/3", tmp_path / "censored.csv")
    else:
        pred = Predictor(tmp_path / "bundle").outputs(kept)[:, 0]
        mae = report["metrics"]["mae"]
        assert report["primary_metric"] == "mae"
        assert mae["value"] == pytest.approx(regression.point_metrics(kept["y"].to_numpy(), pred)["mae"])
        ci = regression.bootstrap_ci(kept["y"].to_numpy(), pred, groups, 200, params.seed)["mae"]
        assert (mae["ci_low"], mae["ci_high"]) == pytest.approx(ci)
    md = (tmp_path / "artifacts/external/site_C-v3/report.md").read_text()
    assert "## Calibration" not in md and "Decision curve" not in md
    assert all(f"| {rule} | {count} |" in md for rule, count in unlabelled.items())
    assert len(recorded) == 1 and recorded[0][2]["primary_metric"] == report["primary_metric"]
    assert not [p for p in rows["pid"] if p in md]


def test_a_label_that_is_none_of_the_models_classes_is_counted_not_scored_as_another():
    """evaluate-external and monitor judge a model of class indices on the rows whose label is one of its classes,
    read as training read them (stripped); another word is counted by its rule, where it used to stop the command.
    A one-against-the-rest model (data.positive_class) reads every other word as the negative class, as training
    did: only a missing label is left out."""
    from types import SimpleNamespace

    import pandas as pd

    from medflow.data.features import Schema
    from medflow.monitoring.report import observed

    batch = pd.DataFrame({"diagnosis": ["malignant", "benign", " malignant ", "Malignant", None, "unknown", "benign"]})
    ok = np.array([True, True, True, True, True, True, False])
    multiclass = Schema(target="diagnosis", classes=["benign", "malignant"], numeric=[], categorical=[])
    labelled, y, reasons = observed(batch, ok, SimpleNamespace(schema=multiclass))
    assert labelled.tolist() == [True, True, True, False, False, False, False]
    assert y.tolist() == [1, 0, 1]
    assert reasons == {"diagnosis: missing or not one of the model's classes": 3}
    binary = Schema(target="diagnosis", classes=["not_malignant", "malignant"], numeric=[], categorical=[],
                    positive_class="malignant")  # fmt: skip
    labelled, y, reasons = observed(batch, ok, SimpleNamespace(schema=binary))
    assert labelled.tolist() == [True, True, True, True, False, True, False]
    assert y.tolist() == [1, 0, 1, 0, 0] and reasons == {"diagnosis: missing": 1}
