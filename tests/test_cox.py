"""The Cox loss of models/cox.py: a linear model trained with it is the Cox model of lifelines and
scikit-survival (Efron and Breslow ties) on the Rossi recidivism table, its Breslow baseline gives lifelines'
survival, and the batches it needs each hold an event."""

import numpy as np
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from sksurv.linear_model import CoxPHSurvivalAnalysis

from medflow.evaluation.survival import surv
from medflow.models.cox import Baseline, cox_loss, event_batches

HORIZONS = [5, 10, 20, 30, 40, 52]


@pytest.fixture(scope="module")
def rossi():
    df = load_rossi()
    cols = [c for c in df.columns if c not in ("week", "arrest")]
    return df, cols, torch.tensor(df[cols].to_numpy(float))


def fitted(x: torch.Tensor, time, event, ties: str) -> np.ndarray:
    """The coefficients of a linear risk minimising the loss (float64, LBFGS to convergence)."""
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")  # fmt: skip
    t, e = torch.tensor(np.asarray(time, float)), torch.tensor(np.asarray(event, float))

    def closure():
        opt.zero_grad()
        loss = cox_loss(x @ beta, t, e, ties)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return beta.detach().numpy()


def test_efron_fit_is_lifelines_and_sksurv_cox_and_breslow_is_sksurv(rossi):
    df, cols, x = rossi
    efron = fitted(x, df.week, df.arrest, "efron")
    lifelines = CoxPHFitter().fit(df, "week", "arrest").params_[cols].to_numpy()  # Efron's ties
    assert np.abs(efron - lifelines).max() < 1e-3
    y = surv(df.week, df.arrest)
    for ties in ("efron", "breslow"):
        ours = efron if ties == "efron" else fitted(x, df.week, df.arrest, ties)
        assert np.abs(ours - CoxPHSurvivalAnalysis(ties=ties).fit(df[cols], y).coef_).max() < 1e-3
    # Rossi has tied weeks: the two approximations differ, each where its reference says.
    assert np.abs(efron - fitted(x, df.week, df.arrest, "breslow")).max() > 1e-3


def test_breslow_baseline_gives_lifelines_survival(rossi):
    df, cols, x = rossi
    cph = CoxPHFitter().fit(df, "week", "arrest")
    risk = x.numpy() @ cph.params_[cols].to_numpy()
    ours = Baseline.fit(risk, df.week, df.arrest).survival(risk, HORIZONS)
    ref = cph.predict_survival_function(df[cols], times=HORIZONS).to_numpy().T
    assert ours.shape == (len(df), len(HORIZONS)) and np.abs(ours - ref).max() < 1e-6
    assert Baseline.fit(risk, df.week, df.arrest).survival(risk, [0])[:, 0].tolist() == [1.0] * len(df)


def test_loss_ignores_row_order_and_huge_scores():
    rng = np.random.default_rng(0)
    time = torch.tensor(rng.integers(1, 10, 200).astype(float))
    event = torch.tensor((rng.random(200) < 0.5).astype(float))
    risk = torch.tensor(rng.normal(size=200))
    perm = torch.tensor(rng.permutation(200))
    for ties in ("efron", "breslow"):
        loss = cox_loss(risk, time, event, ties)
        assert float(cox_loss(risk[perm], time[perm], event[perm], ties)) == pytest.approx(float(loss), abs=1e-12)
        # Shifting every score leaves the likelihood unchanged and, with the shift taken out, finite.
        assert float(cox_loss(risk + 1000, time, event, ties)) == pytest.approx(float(loss), abs=1e-9)
    with pytest.raises(ValueError, match="holds no event"):
        cox_loss(risk, time, torch.zeros(200))
    with pytest.raises(ValueError, match="ties='exact'"):
        cox_loss(risk, time, event, "exact")


def test_event_batches_each_hold_an_event_cover_every_row_and_repeat_under_a_seed():
    event = np.zeros(1000, bool)
    event[np.random.default_rng(1).choice(1000, 30, replace=False)] = True
    batches = event_batches(event, 64, seed=4)
    assert len(batches) == 16 and all(event[b].any() for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(np.array_equal(a, b) for a, b in zip(batches, event_batches(event, 64, seed=4), strict=True))
    assert not np.array_equal(batches[0], event_batches(event, 64, seed=5)[0])
    few = event_batches(event, 10, seed=0)  # 100 batches wanted, 30 events: 30 batches
    assert len(few) == 30 and all(event[b].sum() == 1 for b in few)
    with pytest.raises(ValueError, match="none of 3 rows is an event"):
        event_batches(np.zeros(3, bool), 2, 0)


def test_training_scores_the_c_index_once_per_epoch_on_the_whole_epochs_outputs(rossi, monkeypatch):
    """Per batch, the score would copy each batch's risks to the host (a device sync per step on a GPU)."""
    from medflow.models.tabular import build
    from medflow.tasks.survival import Survival
    from medflow.training.loop import FitConfig, fit

    df, cols, x = rossi
    x = ((x - x.mean(0)) / x.std(0)).float()
    y = torch.tensor(df[["week", "arrest"]].to_numpy(float)).float()
    scored, score = [], Survival.epoch_score
    monkeypatch.setattr(Survival, "epoch_score", lambda self, out, yb: scored.append(len(yb)) or score(self, out, yb))
    cfg = FitConfig(lr=1e-2, weight_decay=0.0, batch_size=64, max_epochs=3, patience=5, seed=0, task="survival")
    result = fit(build("tabular_mlp", n_in=len(cols), n_classes=1, hidden=[8], dropout=0.0), x[:300], y[:300], x[300:],
                 y[300:], cfg)  # fmt: skip
    assert scored == [300, len(df) - 300] * 3  # the training epoch's rows, then the validation split's
    assert all(0 < row["train_c_index"] < 1 for row in result.history)
