import numpy as np
import pandas as pd
import torch

from medflow.data.features import Preprocessor, Schema, coerce_features
from medflow.models.tabular import build
from medflow.training.loop import FitConfig, fit, seed_everything


def toy(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


CFG = FitConfig(lr=1e-2, weight_decay=0.0, batch_size=32, max_epochs=40, patience=5, seed=0)


def train_once():
    seed_everything(0, True)
    x, y = toy()
    model = build("tabular_mlp", n_in=5, n_classes=2, hidden=[16], dropout=0.0)
    result = fit(model, x[:300], y[:300], x[300:], y[300:], CFG)
    return model, result


def test_learns_a_separable_rule_and_is_deterministic_on_cpu():
    model_a, res_a = train_once()
    model_b, res_b = train_once()
    assert res_a.history[-1]["val_accuracy"] > 0.9

    def strip(history):  # throughput is wall-clock, the rest must match exactly
        return [{k: v for k, v in row.items() if k != "rows_per_s"} for row in history]

    assert strip(res_a.history) == strip(res_b.history)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_early_stopping_keeps_the_best_epoch():
    seed_everything(0, True)
    x, y = toy(200)
    y_noise = torch.randint(0, 2, (200,), generator=torch.Generator().manual_seed(1))  # nothing to learn
    model = build("tabular_mlp", n_in=5, n_classes=2, hidden=[64], dropout=0.0)
    seen = []
    res = fit(model, x[:150], y_noise[:150], x[150:], y_noise[150:], CFG, on_epoch=lambda e, r: seen.append(e))
    assert res.epochs_run < CFG.max_epochs
    assert res.epochs_run == res.best_epoch + CFG.patience
    assert seen == list(range(1, res.epochs_run + 1))
    best = min(h["val_loss"] for h in res.history)
    assert abs(res.best_val_loss - best) < 1e-9


def test_preprocessor_uses_training_statistics_and_handles_unseen_values():
    schema = Schema(target="y", classes=["a", "b"], numeric=["v"], categorical=["c"])
    train = coerce_features(pd.DataFrame({"v": ["1", "3", None], "c": ["x", "y", "x"]}), schema)
    pre = Preprocessor(schema.numeric, schema.categorical).fit(train)
    assert pre.medians["v"] == 2.0
    assert pre.feature_names == ["v", "v__missing", "c=x", "c=y"]
    test = coerce_features(pd.DataFrame({"v": ["oops", "100"], "c": ["z", "y"]}), schema)
    out = pre.transform(test)
    assert out[0].tolist()[1:] == [
        1.0,
        0.0,
        0.0,
    ]  # unparseable -> missing indicator, unseen category -> zeros
    assert out[1, 0] > 10  # standardised with the training mean/std, not refitted
    assert np.isfinite(out).all()
