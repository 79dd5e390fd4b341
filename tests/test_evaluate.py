"""The evaluate step's statistics: vectorised metrics against sklearn, patient-level bootstrap, paired differences,
the operating point, subgroups with small-group suppression, and the step's files on a synthetic cohort."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from medflow import tracking
from medflow.data.columns import LABEL, PATIENT_KEY, ROW_ID
from medflow.data.features import Preprocessor, Schema, coerce_features
from medflow.data.synthetic import synthetic_cohort
from medflow.evaluation.metrics import (
    bootstrap_ci,
    bootstrap_draws,
    ece,
    interval,
    metric_ci,
    paired_bootstrap_delta,
    patient_groups,
    point_metrics,
    resample_weights,
    weighted_metrics,
)
from medflow.evaluation.subgroups import group_labels, subgroup_report
from medflow.evaluation.threshold import choose_threshold
from medflow.models.bundle import save_bundle
from medflow.models.tabular import build
from medflow.params import Params
from medflow.steps import evaluate


def binary_sample(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Rounded scores: ties across classes exercise the half-credit of tied pairs and tied thresholds.
    p = np.clip(np.round(rng.normal(0.35 + 0.3 * y, 0.2), 2), 0, 1)
    return y, np.c_[1 - p, p]


def multiclass_sample(n=300, k=3, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += 0.4
    return y, proba / proba.sum(axis=1, keepdims=True)


def cohort_scores(n_patients=1000, seed=0):
    """The synthetic cohort (1-4 visits per patient) scored by a model blind to smoking, a patient-level risk:
    its errors repeat across a patient's visits, as a real model's do."""
    df = synthetic_cohort(n_patients=n_patients, seed=seed, bad_rows=False, extra_label=False)
    num = df[["age", "bmi"]].astype(float)
    p = 1 / (1 + np.exp(-(0.05 * (num["age"] - 50) + 0.15 * (num["bmi"].fillna(27) - 27)).to_numpy()))
    return (df["outcome"] == "disease").to_numpy().astype(int), np.c_[1 - p, p], df["mrn"].to_numpy()


@pytest.mark.parametrize("sample", [binary_sample, multiclass_sample])
def test_vectorised_metrics_equal_sklearn_on_a_plain_sample(sample):
    y, proba = sample()
    got = weighted_metrics(y, proba, np.ones((1, len(y))))
    for k, v in point_metrics(y, proba).items():
        assert got[k][0] == pytest.approx(v, abs=1e-12), k
    if proba.shape[1] == 2:
        assert got["brier"][0] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]), abs=1e-12)


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "brier", "accuracy"])
def test_one_metric_interval_equals_the_interval_of_all_metrics(metric):
    y, proba = binary_sample()
    groups = np.arange(len(y)) // 3
    assert metric_ci(y, proba, groups, metric, n_boot=300, seed=2) == bootstrap_ci(y, proba, groups, 300, 2)[metric]


def test_resample_weights_draw_patients_with_replacement():
    """Each resample draws as many patients as there are, each with chance 1/k: multinomial(k, uniform) counts,
    shared by a patient's rows; the same seed gives the same resamples, in chunks or not."""
    groups = np.array(["a", "b", "b", "c", "d", "d", "d"] * 3)
    groups[::7] = [f"solo{i}" for i in range(3)]
    _, inverse = np.unique(groups, return_inverse=True)
    k = inverse.max() + 1
    w = np.concatenate(list(resample_weights(groups, len(groups), 20_000, seed=3)))
    patient = np.stack([w[:, inverse == g][:, 0] for g in range(k)], axis=1)
    for g in range(k):
        assert (w[:, inverse == g] == patient[:, [g]]).all()
    assert (patient.sum(axis=1) == k).all() and (patient >= 0).all() and (patient == patient.round()).all()
    assert patient.mean(axis=0) == pytest.approx(np.ones(k), abs=0.03)
    assert patient.var(axis=0) == pytest.approx(np.full(k, 1 - 1 / k), abs=0.05)  # multinomial: k p (1 - p)
    assert np.corrcoef(patient[:, 0], patient[:, 1])[0, 1] == pytest.approx(-1 / (k - 1), abs=0.03)
    again = np.concatenate(list(resample_weights(groups, len(groups), 20_000, seed=3)))
    other = np.concatenate(list(resample_weights(groups, len(groups), 50, seed=4)))
    assert (again == w).all() and not (other == w[:50]).all()
    rows = np.concatenate(list(resample_weights(None, 5, 1000, seed=0)))
    assert rows.shape == (1000, 5) and (rows.sum(axis=1) == 5).all()


@pytest.mark.parametrize("sample", [binary_sample, multiclass_sample])
def test_a_weight_row_equals_sklearn_on_the_sample_it_stands_for(sample):
    """A bootstrap resample is a weight row: weight c must count as c copies of the row."""
    y, proba = sample()
    counts = np.random.default_rng(5).multinomial(len(y), np.full(len(y), 1 / len(y)), size=3)
    got = weighted_metrics(y, proba, counts.astype(float), threshold=0.5)
    for b, c in enumerate(counts):
        idx = np.repeat(np.arange(len(y)), c)
        for k, v in point_metrics(y[idx], proba[idx]).items():
            assert got[k][b] == pytest.approx(v, abs=1e-12), (k, b)
        if proba.shape[1] == 2:
            called = (proba[idx, 1] >= 0.5).astype(int)
            assert got["sensitivity"][b] == pytest.approx(skm.recall_score(y[idx], called))
            assert got["ppv"][b] == pytest.approx(skm.precision_score(y[idx], called))
            assert got["ece"][b] == pytest.approx(ece(y[idx], proba[idx]))


@pytest.mark.parametrize("sample", [binary_sample, multiclass_sample])
def test_bootstrap_draws_equal_sklearn_on_each_resample_of_patients(sample):
    """Every model is scored on the same resampled patients, each drawn patient's rows weighted by its draws,
    ties counting half (binary_sample rounds its scores); a model's draws do not depend on the others beside it."""
    y, proba = sample()
    other = np.roll(proba, 7, axis=0)
    groups = (np.arange(len(y)) // 3).astype(str)
    draws = bootstrap_draws(y, [proba, other], groups, "roc_auc", n_boot=40, seed=4)
    weights = np.concatenate(list(resample_weights(groups, len(y), 40, seed=4)))
    assert draws.shape == (2, 40)
    for b in (0, 17, 39):
        for model, p in enumerate((proba, other)):
            score = p[:, 1] if p.shape[1] == 2 else p
            expected = skm.roc_auc_score(y, score, sample_weight=weights[b], multi_class="ovr", average="macro")
            assert draws[model, b] == pytest.approx(expected, abs=1e-12), (model, b)
    assert (bootstrap_draws(y, [other], groups, "roc_auc", n_boot=40, seed=4)[0] == draws[1]).all()
    brier = bootstrap_draws(y, [proba, other], groups, "brier", n_boot=40, seed=4)
    assert brier[1] == pytest.approx(weighted_metrics(y, other, weights)["brier"], abs=1e-12)


@pytest.mark.parametrize("sample", [binary_sample, multiclass_sample])
def test_pr_auc_draws_equal_sklearn_average_precision_on_each_resample_of_patients(sample):
    """Each resample's PR-AUC is sklearn's average precision weighted by the patients' draws, tied scores sharing one
    threshold (binary_sample rounds its scores); multiclass: the macro average over classes. bootstrap_ci's
    interval, computed with every other metric, is the interval of these draws."""
    y, proba = sample()
    groups = (np.arange(len(y)) // 3).astype(str)
    draws = bootstrap_draws(y, [proba], groups, "pr_auc", n_boot=40, seed=4)[0]
    weights = np.concatenate(list(resample_weights(groups, len(y), 40, seed=4)))
    truth, score = (y, proba[:, 1]) if proba.shape[1] == 2 else (np.eye(proba.shape[1])[y], proba)
    for b, w in enumerate(weights):
        expected = skm.average_precision_score(truth, score, sample_weight=w, average="macro")
        assert draws[b] == pytest.approx(expected, abs=1e-12), b
    assert bootstrap_ci(y, proba, groups, n_boot=40, seed=4)["pr_auc"] == interval(draws)


def test_a_constant_score_model_has_every_pair_tied_on_each_resample():
    """The majority-class baseline scores every row alike: ROC-AUC exactly 1/2 and average precision the positive
    share, as sklearn, on each resample holding both classes; undefined without a positive."""
    y = np.array([0] * 9 + [1] * 3)
    proba = np.tile([0.75, 0.25], (len(y), 1))
    groups = np.arange(len(y)) // 2
    auc = bootstrap_draws(y, [proba], groups, "roc_auc", n_boot=300, seed=1)[0]
    ap = bootstrap_draws(y, [proba], groups, "pr_auc", n_boot=300, seed=1)[0]
    weights = np.concatenate(list(resample_weights(groups, len(y), 300, seed=1)))
    positives, negatives = weights[:, y == 1].sum(axis=1), weights[:, y == 0].sum(axis=1)
    both = (positives > 0) & (negatives > 0)
    assert both.any() and not both.all() and (positives == 0).any()
    assert (auc[both] == 0.5).all() and np.isnan(auc[~both]).all() and np.isnan(ap[positives == 0]).all()
    for b in np.flatnonzero(positives > 0):
        expected = skm.average_precision_score(y, proba[:, 1], sample_weight=weights[b])
        assert ap[b] == pytest.approx(expected, abs=1e-12) == positives[b] / (positives[b] + negatives[b])


def test_bootstrap_draws_leave_resamples_without_a_class_undefined():
    y = np.array([0] * 9 + [1] * 3)
    p = np.linspace(0.05, 0.95, 12)
    draws = bootstrap_draws(y, [np.c_[1 - p, p]], None, "roc_auc", n_boot=1000, seed=1)[0]
    weights = np.concatenate(list(resample_weights(None, len(y), 1000, seed=1)))
    assert (np.isnan(draws) == (weights[:, y == 1].sum(axis=1) == 0)).all() and np.isnan(draws).any()


def test_ece_is_zero_when_each_bin_predicts_its_observed_rate():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    assert ece(y, np.c_[1 - p, p]) == pytest.approx(0.0)
    assert ece(y, np.c_[p, 1 - p]) == pytest.approx(0.5)


def test_patient_bootstrap_is_wider_than_row_bootstrap_with_repeated_patients():
    y, proba, mrn = cohort_scores()
    assert len(np.unique(mrn)) < len(y) / 2
    by_patient = bootstrap_ci(y, proba, patient_groups(mrn), n_boot=2000, seed=0)
    by_row = bootstrap_ci(y, proba, None, n_boot=2000, seed=0)
    for k in ("roc_auc", "pr_auc", "accuracy", "brier"):
        width_p, width_r = np.diff(by_patient[k])[0], np.diff(by_row[k])[0]
        assert width_p > 1.05 * width_r, (k, width_p, width_r)


def test_rows_without_a_patient_key_are_their_own_patients():
    assert patient_groups(pd.Series([None, "", None], dtype="string")) is None
    keys = patient_groups(pd.Series(["a", None, "a", ""], dtype="string"))
    assert keys[0] == keys[2] and len(set(keys)) == 3


def test_resamples_missing_a_class_are_left_out_of_rank_metric_intervals():
    # 3 positives in 12 rows: about 3% of resamples draw none, where ROC-AUC and PR-AUC are undefined.
    y = np.array([0] * 9 + [1] * 3)
    p = np.linspace(0.05, 0.95, 12)
    ci = bootstrap_ci(y, np.c_[1 - p, p], None, n_boot=1000, seed=1)
    for k in ("roc_auc", "pr_auc", "accuracy"):
        assert 0 <= ci[k][0] <= ci[k][1] <= 1, k


def test_paired_delta_of_identical_models_is_exactly_zero():
    y, proba, mrn = cohort_scores(n_patients=300)
    d = paired_bootstrap_delta(y, proba, proba.copy(), patient_groups(mrn), "roc_auc", n_boot=500)
    assert (d.delta, d.ci_low, d.ci_high, d.n_boot) == (0.0, 0.0, 0.0, 500)


def test_paired_delta_finds_a_better_model_and_matches_the_point_difference():
    y, weak, mrn = cohort_scores(n_patients=300)
    # The better model also knows the patient's smoking: the risk the weak one misses.
    df = synthetic_cohort(n_patients=300, seed=0, bad_rows=False, extra_label=False)
    logit = np.log(weak[:, 1] / weak[:, 0]) + 1.2 * (df["smoker"] == "yes").to_numpy()
    strong = np.c_[1 - 1 / (1 + np.exp(-logit)), 1 / (1 + np.exp(-logit))]
    d = paired_bootstrap_delta(y, strong, weak, patient_groups(mrn), "roc_auc", n_boot=1000, seed=3)
    expected = skm.roc_auc_score(y, strong[:, 1]) - skm.roc_auc_score(y, weak[:, 1])
    assert d.delta == pytest.approx(expected, abs=1e-12)
    assert 0 < d.ci_low < d.delta < d.ci_high
    reverse = paired_bootstrap_delta(y, weak, strong, patient_groups(mrn), "roc_auc", n_boot=1000, seed=3)
    assert reverse.ci_high == pytest.approx(-d.ci_low)


def test_paired_delta_refuses_scores_of_different_rows():
    y, proba = binary_sample()
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap_delta(y, proba, proba[:-1])
    with pytest.raises(ValueError, match="need a threshold"):
        paired_bootstrap_delta(y, proba, proba, metric="sensitivity")


def test_threshold_youden_and_target_sensitivity():
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    s = np.arange(10) / 10
    assert choose_threshold(y, s, "youden") == pytest.approx(0.6)
    t = choose_threshold(y, s, "sensitivity", target=1.0)
    assert t == pytest.approx(0.4) and (s[y == 1] >= t).all()
    with pytest.raises(ValueError, match="one class"):
        choose_threshold(np.zeros(5), s[:5])


def test_group_labels_bin_numeric_columns_and_name_missing_values():
    table = pd.DataFrame({"age": [30.0, 40.0, 64.9, 65.0, np.nan], "sex": ["F", "M", "F", None, "M"]})
    labels = group_labels(table, ["age", "sex"], {"age": [65, 40]})
    assert list(labels["age"]) == ["age<40", "40<=age<65", "40<=age<65", "age>=65", "missing"]
    assert list(labels["age"].categories) == ["age<40", "40<=age<65", "age>=65", "missing"]
    assert list(labels["sex"]) == ["sex=F", "sex=M", "sex=F", "missing", "sex=M"]
    with pytest.raises(ValueError, match="not a feature"):
        group_labels(table, ["mrn"], {})
    with pytest.raises(ValueError, match="subgroup_bins"):
        group_labels(pd.DataFrame({"x": np.arange(50.0)}), ["x"], {})


def test_small_subgroups_are_suppressed_and_the_worst_and_gap_use_shown_groups_only():
    y, proba, mrn = cohort_scores(n_patients=400)
    groups = patient_groups(mrn)
    site = np.select([np.isin(mrn, np.unique(mrn)[:5]), np.isin(mrn, np.unique(mrn)[5:8])],
                     ["site=tiny", "site=wee"], "site=big")  # fmt: skip
    half = np.where(np.isin(mrn, np.unique(mrn)[::2]), "even", "odd")
    rep = subgroup_report(y, proba, groups, {"site": site, "half": half}, "roc_auc", 10, 200, 0, 0.5)
    # Small categories are pooled into one unnamed row: a rare value would single out its patients.
    (small,) = [r for r in rep["groups"] if r["suppressed"]]
    assert small == {"column": "site", "group": "site=<other>", "patients": "<10", "suppressed": True}
    shown = [r for r in rep["groups"] if not r["suppressed"]]
    assert {r["group"] for r in shown} == {"site=big", "even", "odd"}
    for r in shown:
        assert r["roc_auc_ci_low"] <= r["roc_auc"] <= r["roc_auc_ci_high"] and "sensitivity" in r
    assert rep["worst"]["roc_auc"] == min(r["roc_auc"] for r in shown)
    # A column left with one shown group has no gap: the suppressed group is never compared.
    assert set(rep["gap_by_column"]) == {"half"}
    assert rep["largest_gap"] == pytest.approx(abs(shown[1]["roc_auc"] - shown[2]["roc_auc"]))


SCHEMA = Schema(
    target="outcome",
    classes=["healthy", "disease"],
    numeric=["age", "bmi", "glucose", "systolic_bp"],
    categorical=["sex", "smoker", "site"],
    patient_id="mrn",
    positive_class="disease",
)


def make_trained(paths, classes=("healthy", "disease"), one_class_val=False, **evaluate_params):
    """What clean, split and train leave for a synthetic cohort: a tiny bundle fitted for a few steps, a run with a
    per-epoch history, and a patient-grouped manifest."""
    schema = Schema(**{**SCHEMA.__dict__, "classes": list(classes)})
    df = synthetic_cohort(n_patients=400, seed=2, bad_rows=False, extra_label=len(classes) > 2)
    feats = coerce_features(df, schema)
    key = pd.Series(pd.factorize(df["mrn"])[0]).map(lambda i: f"P-{i:06d}")
    cleaned = pd.concat([pd.DataFrame({ROW_ID: range(len(df)), PATIENT_KEY: key}), feats], axis=1)
    cleaned[LABEL] = df["outcome"].map({c: i for i, c in enumerate(classes)}).astype("int64").to_numpy()
    patients = key.unique()
    split_of = dict(zip(patients, np.resize(["train", "train", "train", "val", "test"], len(patients)), strict=True))
    split = key.map(split_of)
    if one_class_val:
        cleaned.loc[(split == "val").to_numpy(), LABEL] = 0
    paths.step_dir("clean").mkdir(parents=True)
    cleaned.to_parquet(paths.cleaned)
    schema.save(paths.schema)
    paths.step_dir("split").mkdir(parents=True)
    pd.DataFrame({"row_id": cleaned[ROW_ID], "patient_key": key, "split": split}).to_csv(paths.manifest, index=False)

    train = (split == "train").to_numpy()
    pre = Preprocessor(schema.numeric, schema.categorical).fit(feats[train])
    config = {
        "name": "tabular_mlp",
        "n_in": len(pre.feature_names),
        "n_classes": len(classes),
        "hidden": [8],
        "dropout": 0.0,
    }
    torch.manual_seed(0)
    model = build(**config)
    x = torch.as_tensor(pre.transform(feats[train]), dtype=torch.float32)
    yt = torch.as_tensor(cleaned[LABEL].to_numpy()[train])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), yt).backward()
        opt.step()
    save_bundle(paths.model_bundle, model.eval(), config, pre, schema)

    tracking.configure(paths)
    params = Params.model_validate(
        {
            "data": {"source": "data/cohort.csv", "target": "outcome", "patient_id": "mrn"},
            "evaluate": {"n_boot": 200, **evaluate_params},
        }
    )
    run_id = tracking.start_run(params, paths, "train")
    for epoch in (1, 2, 3):
        tracking.log_epoch(run_id, {"train_loss": 1 / epoch, "val_loss": 1.2 / epoch, "val_accuracy": 0.6}, epoch)
    paths.train_run.write_text(json.dumps({"run_id": run_id}))
    paths.summary("train").write_text(json.dumps({"best_epoch": 3}))
    return params, paths, set(df["mrn"]) | set(key)


@pytest.fixture
def trained(project):
    return make_trained(project, subgroups=["sex", "site", "age"], subgroup_bins={"age": [40, 85]})


def test_the_step_writes_flat_metrics_a_report_with_suppressed_groups_and_every_plot(trained):
    params, paths, identifiers = trained
    summary = evaluate.run(params, paths)
    metrics = json.loads(paths.metrics.read_text())
    assert all(isinstance(v, int | float) for v in metrics.values())
    assert 0 <= metrics["test_ece_ci_low"] < metrics["test_ece_ci_high"]
    for k in ("roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "brier"):
        assert metrics[f"test_{k}_ci_low"] <= metrics[f"test_{k}"] <= metrics[f"test_{k}_ci_high"], k
    assert 0 < metrics["threshold"] < 1 and summary["threshold"] == metrics["threshold"]
    assert metrics["n_test_patients"] < metrics["n_test"]
    assert metrics["temperature"] > 0 and metrics["test_brier_scaled"] > 0 and "test_ece_scaled" in metrics
    assert {"test_subgroup_worst_roc_auc", "test_subgroup_gap_roc_auc"} <= set(metrics)

    out = paths.step_dir("evaluate")
    report = json.loads((out / "report.json").read_text())
    assert report["resampled"] == "patients" and report["threshold"]["method"].startswith("youden")
    oldest = next(r for r in report["subgroups"]["groups"] if r["group"] == "age>=85")
    assert oldest == {"column": "age", "group": "age>=85", "patients": "<10", "suppressed": True}
    md = (out / "report.md").read_text()
    assert "| age>=85 | <10 |  | | |" in md
    # Accuracy and sensitivity come from two decision rules: each row of the table names its own.
    t = f"{metrics['threshold']:.4f}"
    assert re.search(r"\| accuracy \| [\d.]+ \| \[[\d., ]+\] \| most probable class \|", md), md
    assert re.search(rf"\| sensitivity \| [\d.]+ \| \[[\d., ]+\] \| positive at score >= {t} \|", md), md
    assert re.search(r"\| roc_auc \| [\d.]+ \| \[[\d., ]+\] \|  \|", md), md
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert pngs == {
        "roc.png",
        "precision_recall.png",
        "confusion_matrix.png",
        "reliability.png",
        "learning_curves.png",
        "subgroups.png",
        "calibration_curve.png",
        "decision_curve.png",
        "explanations.png",
        "permutation_importance.png",
    }
    for k in ("calibration_intercept", "calibration_slope"):
        assert metrics[f"test_{k}_ci_low"] <= metrics[f"test_{k}"] <= metrics[f"test_{k}_ci_high"], k
    assert "## Decision curve" in md and re.search(r"\| 0\.\d+ \(operating point\) \|", md), md
    assert {r["feature"] for r in report["explanations"]["features"]} == {"age", "bmi", "glucose", "systolic_bp",
                                                                          "sex", "smoker", "site"}  # fmt: skip
    perm = report["permutation_importance"]
    assert perm["metric"] == "roc_auc" and {r["feature"] for r in perm["features"]} == {"age", "bmi", "glucose",
                                                                                        "systolic_bp", "sex", "smoker",
                                                                                        "site"}  # fmt: skip
    assert "## Permutation importance (fall of roc_auc" in md
    dca = report["decision_curve"]
    assert [r["threshold"] for r in dca["table"]][:2] == [0.05, 0.1] and dca["method"].startswith("dcurves")
    written = "".join(p.read_text() for p in (paths.metrics, out / "report.json", out / "report.md", out / "roc.json"))
    assert not [i for i in identifiers if i in written]

    from mlflow import MlflowClient

    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.metrics["test_roc_auc_ci_low"] == metrics["test_roc_auc_ci_low"]
    logged = {a.path for a in MlflowClient().list_artifacts(summary["run_id"], "evaluation")}
    assert {"evaluation/report.md", "evaluation/subgroups.png", "evaluation/learning_curves.png"} <= logged


def test_multiclass_figures_draw_one_curve_per_class(tmp_path):
    from medflow.evaluation import plots

    y, proba = multiclass_sample()
    classes = ["a", "b", "c"]
    assert {p["class"] for p in plots.roc_points(y, proba, classes)} == set(classes)
    roc, pr = plots.roc_curves(y, proba, classes), plots.pr_curves(y, proba, classes)
    assert [c["name"] for c in roc] == [c["name"] for c in pr] == classes
    plots.plot_roc(roc, tmp_path / "roc.png")
    plots.plot_pr(pr, tmp_path / "pr.png", chance=False)
    pred = proba.argmax(axis=1)
    counts = plots.confusion_counts(y, pred, len(classes))
    assert counts.sum() == len(y) and np.trace(counts) == (pred == y).sum()
    hit = (pred == y).astype(float)
    bins = plots.reliability_bins(proba.max(axis=1), hit, 10)
    assert bins["counts"].sum() == len(y)
    plots.plot_confusion(counts, classes, tmp_path / "cm.png", "most probable class")
    plots.plot_reliability(bins, tmp_path / "rel.png", "top-class confidence")
    assert all((tmp_path / f).stat().st_size > 5_000 for f in ("roc.png", "pr.png", "cm.png", "rel.png"))


def test_a_multiclass_step_reports_calibration_and_no_threshold(project):
    params, paths, _ = make_trained(project, classes=("disease", "healthy", "inconclusive"))
    evaluate.run(params, paths)
    metrics = json.loads(paths.metrics.read_text())
    assert "threshold" not in metrics and "test_sensitivity" not in metrics
    # ECE is biased upwards (|noise| adds up), so its resamples need not bracket the point: only its order is checked.
    assert 0 <= metrics["test_ece_ci_low"] < metrics["test_ece_ci_high"]
    assert metrics["test_brier_ci_low"] <= metrics["test_brier"] <= metrics["test_brier_ci_high"]
    report = json.loads((paths.step_dir("evaluate") / "report.json").read_text())
    assert report["threshold"] is None and "subgroups" not in report
    assert (paths.step_dir("evaluate") / "plots/reliability.png").exists()


def test_a_one_class_validation_split_falls_back_to_the_most_probable_class(project):
    params, paths, _ = make_trained(project, one_class_val=True)
    evaluate.run(params, paths)
    assert json.loads(paths.metrics.read_text())["threshold"] == 0.5
    report = json.loads((paths.step_dir("evaluate") / "report.json").read_text())
    assert "one class" in report["threshold"]["method"]


def test_subgroups_by_the_patient_key_are_refused(project):
    params, paths, _ = make_trained(project, subgroups=["_patient_key"])
    with pytest.raises(ValueError, match="'_patient_key' is not a feature"):
        evaluate.run(params, paths)
    assert not paths.metrics.exists()


def test_temperature_scaling_recovers_the_temperature_that_distorted_calibrated_scores():
    from medflow.evaluation.calibration import fit_temperature
    from medflow.models.recalibration import scale

    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 5000)
    y = (rng.random(5000) < p).astype(int)
    calibrated = np.c_[1 - p, p]
    overconfident = scale(calibrated, 0.5)
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.0, rel=0.1)
    assert ece(y, scale(overconfident, t)) < ece(y, overconfident) / 3
    assert np.array_equal(scale(overconfident, t).argmax(axis=1), overconfident.argmax(axis=1))
