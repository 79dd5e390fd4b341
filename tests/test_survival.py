"""Survival metrics against scikit-survival and lifelines: Harrell's and Uno's C-index (exact on random data with
tied times, tied risks and censoring), their patient bootstrap and its jackknife above a size, time-dependent AUC,
Brier scores and calibration against Kaplan-Meier."""

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw

from medflow.evaluation import survival as sv
from medflow.evaluation.metrics import interval, resample_weights


def table(n, seed, times=30, censored=0.4):
    """Integer times (many tied), rounded risks (many tied), a censoring share: every kind of tie sksurv handles."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, times, n).astype(float)
    event = rng.random(n) >= censored
    risk = np.round(-time / times + rng.normal(0, 0.5, n), 1)
    return time, event, risk


@pytest.mark.parametrize("seed", range(12))
def test_harrell_c_equals_sksurv_and_lifelines_with_ties_and_censoring(seed):
    time, event, risk = table(int(np.random.default_rng(seed).integers(3, 600)), seed)
    ours = sv.harrell_c(time, event, risk)
    assert ours == pytest.approx(concordance_index_censored(event, time, risk)[0], abs=1e-12)
    # lifelines scores survival (higher = longer): the negated risk.
    assert ours == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)


@pytest.mark.parametrize(("seed", "tau"), [(0, None), (1, 20.0), (2, None), (3, 12.0), (4, 25.0)])
def test_uno_c_equals_sksurv_ipcw_with_and_without_truncation(seed, tau):
    time, event, risk = table(400, seed)
    train_time, train_event, _ = table(800, seed + 100, times=40)
    ours = sv.uno_c(time, event, risk, train_time, train_event, tau)
    ref = concordance_index_ipcw(sv.surv(train_time, train_event), sv.surv(time, event), risk, tau)[0]
    assert ours == pytest.approx(ref, abs=1e-9)
    assert ours != pytest.approx(sv.harrell_c(time, event, risk), abs=1e-6)


def test_no_comparable_pair_is_nan_and_bad_input_is_one_line():
    assert np.isnan(sv.harrell_c(np.array([1.0, 2.0]), np.array([False, False]), np.array([0.1, 0.2])))
    with pytest.raises(ValueError, match="one value per row: 2, 2, 3"):
        sv.concordance(np.ones(2), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="risk scores: 1 are not finite"):
        sv.concordance(np.ones(2), np.ones(2), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="times: 2 are not finite"):
        sv.concordance(np.array([np.nan, np.inf]), np.ones(2), np.ones(2))


def test_bootstrap_draws_are_sksurv_on_each_resample_of_patients():
    time, event, risk = table(150, 5)
    patients = np.random.default_rng(5).integers(0, 60, 150).astype(str)
    found = sv.concordance(time, event, risk, groups=patients, n_boot=40, seed=3)
    # The same resamples by hand: each row repeated by its patient's draws, scored by sksurv.
    draws = []
    for w in resample_weights(patients, 150, 40, 3):
        for row in w:
            rows = np.repeat(np.arange(150), row.astype(int))
            draws.append(concordance_index_censored(event[rows], time[rows], risk[rows])[0])
    assert found.method == "bootstrap" and found.n_boot == 40
    assert (found.ci_low, found.ci_high) == pytest.approx(interval(np.array(draws)), abs=1e-12)
    assert found.ci_low < found.value < found.ci_high


@pytest.mark.parametrize("patients", [False, True])
def test_jackknife_interval_above_the_size_agrees_with_the_bootstrap(monkeypatch, patients):
    rng = np.random.default_rng(7)
    n = 3000
    time = rng.exponential(10, n).round(1)
    event = rng.random(n) < 0.5
    risk = -time + rng.normal(0, 8, n)
    groups = rng.integers(0, 1000, n).astype(str) if patients else None
    boot = sv.concordance(time, event, risk, groups=groups, n_boot=1000)
    monkeypatch.setattr(sv, "EXACT_BOOTSTRAP_ROWS", 100)
    jack = sv.concordance(time, event, risk, groups=groups, n_boot=1000)
    assert (boot.method, jack.method) == ("bootstrap", "jackknife")
    assert jack.value == pytest.approx(boot.value, abs=1e-12)
    width = boot.ci_high - boot.ci_low
    assert jack.ci_low == pytest.approx(boot.ci_low, abs=0.1 * width)
    assert jack.ci_high == pytest.approx(boot.ci_high, abs=0.1 * width)


def exponential_cohort(n, seed, horizons=(5.0, 10.0, 20.0)):
    """Exponential event times whose hazard the risk sets, censored uniformly: the true survival is known."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    hazard = 0.05 * np.exp(risk)
    event_time, censor = rng.exponential(1 / hazard), rng.uniform(0, 60, n)
    time, event = np.minimum(event_time, censor).round(2), event_time <= censor
    survival = np.exp(-np.outer(hazard, np.asarray(horizons)))
    return time, event, risk, survival, np.asarray(horizons)


def test_time_dependent_metrics_are_sksurv_with_the_training_censoring():
    from sksurv.metrics import brier_score, cumulative_dynamic_auc, integrated_brier_score

    time, event, risk, survival, horizons = exponential_cohort(600, 1)
    tt, te, *_ = exponential_cohort(900, 2)
    train, test = sv.surv(tt, te), sv.surv(time, event)
    auc, mean = sv.time_auc(tt, te, time, event, risk, horizons)
    ref_auc, ref_mean = cumulative_dynamic_auc(train, test, risk, horizons)
    assert np.allclose(auc, ref_auc) and mean == pytest.approx(ref_mean) and (auc > 0.6).all()
    ref_brier = brier_score(train, test, survival, horizons)[1]
    assert np.allclose(sv.brier(tt, te, time, event, survival, horizons), ref_brier)
    ibs = sv.integrated_brier(tt, te, time, event, survival, horizons)
    assert ibs == pytest.approx(integrated_brier_score(train, test, survival, horizons))


def test_calibration_of_the_true_survival_matches_kaplan_meier_and_a_shifted_one_does_not():
    time, event, risk, survival, horizons = exponential_cohort(6000, 3)
    for row in sv.calibration(time, event, risk, survival, horizons, n_groups=4):
        assert row["rows"] == 1500 and row["observed"] == pytest.approx(row["predicted"], abs=0.04)
    shifted = sv.calibration(time, event, risk, survival**2, horizons, n_groups=4)
    assert max(abs(r["observed"] - r["predicted"]) for r in shifted) > 0.1


def test_risk_groups_split_by_quantiles_and_the_plot_is_drawn(tmp_path):
    time, event, risk, _, _ = exponential_cohort(900, 4)
    groups = sv.risk_groups(risk, 3)
    assert np.bincount(groups).tolist() == [300, 300, 300]
    assert risk[groups == 0].max() < risk[groups == 2].min()
    grid = np.linspace(1, 40, 20)
    curves = sv.km_by_group(time, event, risk, np.exp(-np.outer(0.05 * np.exp(risk), grid)), grid)
    # The high-risk group dies sooner, observed and predicted alike.
    assert sv.km_at(time[groups == 2], event[groups == 2], 20) < sv.km_at(time[groups == 0], event[groups == 0], 20)
    assert curves[2]["predicted"][-1] < curves[0]["predicted"][-1]
    out = sv.plot_km_by_group(curves, tmp_path / "km.png", unit="days")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("uno", [False, True])
def test_each_rows_share_of_the_pairs_is_the_brute_force_count(uno):
    """The jackknife reads each row's concordant and comparable pair weight, from both sides of its pairs: the
    same as counting every pair (i an event, j followed longer or censored at i's time) one by one."""
    time, event, risk = table(80, 11, times=12)
    u = np.random.default_rng(0).uniform(1, 3, 80) if uno else np.ones(80)
    pairs = sv._Pairs.of(time, event, risk)
    conc, comp = pairs.influence(u[pairs.order][pairs.events])
    want_conc, want_comp = np.zeros(80), np.zeros(80)
    for i in np.flatnonzero(event):
        for j in range(80):
            if time[j] > time[i] or (time[j] == time[i] and not event[j]):
                credit = u[i] * ((risk[i] > risk[j]) + 0.5 * (risk[i] == risk[j]))
                want_conc[[i, j]] += credit
                want_comp[[i, j]] += u[i]
    assert np.allclose(conc, want_conc[pairs.order]) and np.allclose(comp, want_comp[pairs.order])


def test_time_dependent_auc_draws_are_scikit_survivals_auc_on_each_patient_resample():
    from sksurv.metrics import cumulative_dynamic_auc

    rng = np.random.default_rng(1)
    t0, e0 = rng.integers(1, 60, 300).astype(float), rng.random(300) < 0.6
    t, e = rng.integers(1, 55, 120).astype(float), rng.random(120) < 0.6
    risk = np.round(rng.normal(size=120) - 0.02 * t, 1)  # tied risks and tied times
    horizons = [10, 20, 40]
    point = sv.time_auc_draws(t0, e0, t, e, risk, horizons, None, 0, 0)[0]
    np.testing.assert_allclose(point, sv.time_auc(t0, e0, t, e, risk, horizons)[0], atol=1e-12)
    # A resample is scikit-survival's AUC on the rows repeated as often as their patient was drawn.
    groups = np.repeat(np.arange(60), 2).astype(str)
    draws = sv.time_auc_draws(t0, e0, t, e, risk, horizons, groups, 5, 3)
    w = next(resample_weights(groups, len(t), 5, 3)).astype(int)
    for b in range(5):
        rows = np.repeat(np.arange(len(t)), w[b])
        expected = cumulative_dynamic_auc(sv.surv(t0, e0), sv.surv(t[rows], e[rows]), risk[rows], horizons)[0]
        np.testing.assert_allclose(draws[b], expected, atol=1e-12)
