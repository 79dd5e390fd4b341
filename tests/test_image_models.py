"""Image models customised by params: resnet_small width/depth, normalisation from the training split, class weights,
label smoothing, mixup and cutmix, each shown to learn scikit-learn's 8x8 digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from medflow.data.features import ImageNormaliser
from medflow.models.bundle import Predictor
from medflow.models.tabular import build
from medflow.models.vision import ResNetSmall, options
from medflow.params import TrainParams, from_dict
from medflow.training.augment import cutmix_box, mix
from medflow.training.loop import FitConfig, fit


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.images * 255 / 16).round().astype(np.uint8)[..., None]  # [N, 8, 8, 1] on the 0-255 scale
    order = np.random.default_rng(0).permutation(len(x))
    tr, va = order[:1200], order[1200:]
    return (
        torch.from_numpy(x[tr]),
        torch.from_numpy(d.target[tr]),
        torch.from_numpy(x[va]),
        torch.from_numpy(d.target[va]),
    )


def small_resnet(**train) -> torch.nn.Module:
    tp = TrainParams(model="resnet_small", channels=[8, 16], blocks=1, **train)
    return build("resnet_small", in_shape=[1, 8, 8], n_classes=10, **options("resnet_small", tp))


def test_resnet_small_width_and_depth_come_from_params():
    default = build("resnet_small", in_shape=[1, 8, 8], n_classes=10, **options("resnet_small", TrainParams()))
    narrow = small_resnet()
    deep = build("resnet_small", in_shape=[1, 8, 8], n_classes=10, channels=[8, 16], blocks=3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(deep) < count(default)
    assert len(narrow.stages) == 2 and len(deep.stages) == 6 and narrow.head[-1].in_features == 16
    assert options("cifar_convnet", TrainParams()) == {}  # the other image models take no such options
    assert isinstance(build("resnet_small", in_shape=[1, 8, 8], n_classes=10), ResNetSmall)  # old bundles still load


@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"class_weights": "balanced"},
        {"label_smoothing": 0.1},
        {"mixup": 0.2},
        {"cutmix": 1.0},
        {"mixup": 0.2, "cutmix": 1.0},
    ],
    ids=lambda s: ",".join(s) or "plain",
)
def test_each_setting_learns_digits(digits, setting):
    xtr, ytr, xva, yva = digits
    torch.manual_seed(0)
    pre = ImageNormaliser.fit(xtr.numpy())  # the training split's statistics only
    weights = None
    if setting.get("class_weights") == "balanced":
        counts = np.bincount(ytr.numpy(), minlength=10)
        weights = (len(ytr) / (10 * counts)).tolist()
    loop = {k: v for k, v in setting.items() if k != "class_weights"}
    cfg = FitConfig(
        lr=3e-3, weight_decay=1e-4, batch_size=64, max_epochs=6, patience=6, seed=0, mean=tuple(pre.mean),
        std=tuple(pre.std), class_weights=weights, **loop,
    )  # fmt: skip
    result = fit(small_resnet(), xtr, ytr, xva, yva, cfg)
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] >= 0.9, (setting, best)


def test_mixup_mixes_rows_and_its_loss_is_cross_entropy_with_soft_targets():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    mixed = mix(x, y, mixup=0.4, cutmix=0.0, rng=np.random.default_rng(1), gen=gen)
    assert 0 < mixed.lam < 1
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mixed.x, mixed.lam * x + (1 - mixed.lam) * x[perm], atol=1e-6)
    assert torch.equal(mixed.y_other, y[perm])
    logits = torch.randn(16, 3)
    soft = mixed.lam * F.one_hot(y, 3).float() + (1 - mixed.lam) * F.one_hot(y[perm], 3).float()
    assert torch.allclose(mixed.loss(F.cross_entropy, logits, y), F.cross_entropy(logits, soft), atol=1e-6)


def test_cutmix_pastes_one_box_and_weighs_labels_by_the_area_kept():
    x = torch.zeros(4, 1, 8, 8)
    x[1:] = torch.arange(1, 4).float().view(3, 1, 1, 1)  # each image one constant value: a box shows its source
    mixed = mix(x, torch.arange(4), mixup=0.0, cutmix=1.0, rng=np.random.default_rng(3), gen=torch.Generator())
    changed = (mixed.x != x).flatten(1).float().mean(1)
    kept_from_self = 1 - mixed.lam
    # Every image whose partner differs from it got exactly the box's area from that partner.
    assert torch.allclose(changed[mixed.y_other != torch.arange(4)], torch.tensor(kept_from_self), atol=1e-6)
    y0, y1, x0, x1 = cutmix_box(8, 8, 0.75, np.random.default_rng(0))
    assert 0 <= y0 < y1 <= 8 and 0 <= x0 < x1 <= 8 and (y1 - y0) * (x1 - x0) <= 16


def test_the_train_step_builds_resnet_small_from_params_and_normalises_with_the_training_split(project, monkeypatch):
    from medflow.data.manifest import load_split
    from medflow.pipeline import run_step

    monkeypatch.setenv("MEDFLOW_SALT", "s")
    train = {"model": "resnet_small", "channels": [8, 16], "blocks": 1, "max_epochs": 8, "lr": 0.003, "mixup": 0.2}
    params = from_dict(
        {
            "data": {"kind": "image", "source": "digits", "target": "label", "positive_class": None},
            "train": {**train, "class_weights": "none", "augment_translate": 1},
            "register": {"model_name": "digits-test"},
        }
    )
    for step in ("validate", "clean", "split", "train"):
        run_step(step, params, project)
    config = json.loads((project.model_bundle / "model.json").read_text())
    assert config["channels"] == [8, 16] and config["blocks"] == 1
    df, _ = load_split(project)
    images = np.load(project.images)[(df["_split"] == "train").to_numpy()]
    pre = json.loads((project.model_bundle / "preprocessor.json").read_text())
    assert np.allclose(pre["mean"], images.reshape(-1, 1).mean(0), rtol=1e-6)
    summary = json.loads(project.summary("train").read_text())
    assert summary["best_val_accuracy"] >= 0.8, summary
    predictor = Predictor(project.model_bundle)
    assert isinstance(predictor.model, ResNetSmall) and len(predictor.model.stages) == 2
