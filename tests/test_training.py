"""The training loop (tables and images), batched augmentation, and the train step on both kinds of data."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from medflow.data.features import ImageNormaliser, Preprocessor, Schema, coerce_features
from medflow.models.tabular import build
from medflow.training.data import Split, random_flip, random_translate
from medflow.training.loop import FitConfig, fit, seed_everything


def toy(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def toy_images(n=240, seed=0, size=8, channels=1):
    """uint8 NHWC; class 0 has a bright top half, class 1 a bright bottom half, class 2 neither (flip-invariant)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, size, size, channels))
    x[y == 0, : size // 2] += 150
    x[y == 1, size // 2 :] += 150
    return x.astype(np.uint8), y


CFG = FitConfig(lr=1e-2, weight_decay=0.0, batch_size=32, max_epochs=40, patience=5, seed=0)


def image_cfg(x: np.ndarray, **kw) -> FitConfig:
    norm = ImageNormaliser.fit(x)
    base = {"lr": 3e-3, "weight_decay": 0.0, "batch_size": 32, "max_epochs": 6, "patience": 6, "seed": 0}
    return FitConfig(**{**base, "mean": tuple(norm.mean), "std": tuple(norm.std), **kw})


def strip(history):  # throughput is wall-clock, the rest must match exactly
    return [{k: v for k, v in row.items() if k != "rows_per_s"} for row in history]


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


def test_sgd_label_smoothing_and_class_weights_still_learn():
    seed_everything(0, True)
    x, y = toy()
    model = build("tabular_mlp", n_in=5, n_classes=2, hidden=[16], dropout=0.1)
    cfg = FitConfig(
        lr=0.05,
        weight_decay=1e-4,
        batch_size=32,
        max_epochs=15,
        patience=15,
        seed=0,
        optimizer="sgd",
        label_smoothing=0.1,
        class_weights=[1.0, 2.0],
    )
    res = fit(model, x[:300], y[:300], x[300:], y[300:], cfg)
    assert res.history[res.best_epoch - 1]["val_accuracy"] > 0.9
    with pytest.raises(ValueError, match="unknown optimizer"):
        fit(model, x, y, x, y, FitConfig(**{**cfg.__dict__, "optimizer": "lion"}))


def test_flip_mirrors_a_random_half_and_translate_shifts_with_zero_fill():
    x = torch.arange(64 * 2 * 5 * 5).remainder(251).add(1).to(torch.uint8).view(64, 2, 5, 5)  # NCHW, no zeros
    flipped = random_flip(x, torch.Generator().manual_seed(0))
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54

    k = 2
    moved = random_translate(x, k, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and moved.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (k, k, k, k))
    shifts = set()
    for i in range(len(x)):  # every output is one (dy, dx) window of the zero-padded input
        found = [
            (dy, dx)
            for dy in range(2 * k + 1)
            for dx in range(2 * k + 1)
            if torch.equal(moved[i], padded[i, :, dy : dy + 5, dx : dx + 5])
        ]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) > 10  # the shifts vary per image
    assert torch.equal(random_translate(x, k, torch.Generator().manual_seed(0)), moved)


def test_nhwc_storage_gives_channels_last_batches_equal_to_nchw_storage():
    """The CUDA layout (images kept NHWC, batches channels_last) computes what the CPU layout (NCHW) does."""
    x, y = toy_images(32, channels=3)
    nhwc = torch.from_numpy(x)
    norm = {
        "mean": torch.tensor([50.0, 60, 70]).view(1, -1, 1, 1),
        "std": torch.tensor([20.0, 30, 40]).view(1, -1, 1, 1),
    }
    a = Split(nhwc, torch.from_numpy(y), torch.device("cpu"), **norm, nhwc=True)
    b = Split(nhwc.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y), torch.device("cpu"), **norm)
    idx = torch.randperm(32)[:16]
    xa, ya = a.batch(idx, flip=True, translate=2, gen=torch.Generator().manual_seed(0))
    xb, yb = b.batch(idx, flip=True, translate=2, gen=torch.Generator().manual_seed(0))
    assert xa.is_contiguous(memory_format=torch.channels_last) and xb.is_contiguous()
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == torch.float32
    assert torch.equal(a.batch(slice(3, 9))[0], b.batch(slice(3, 9))[0])


@pytest.mark.parametrize("name", ["cifar_convnet", "resnet_small"])
def test_image_models_learn_on_uint8_images_with_augmentation(name):
    x, y = toy_images()
    seed_everything(0, True)
    model = build(name, in_shape=[1, 8, 8], n_classes=3)
    cfg = image_cfg(x[:180], augment_flip=True, augment_translate=1)
    seen = []
    res = fit(
        model,
        torch.from_numpy(x[:180]),
        torch.from_numpy(y[:180]),
        torch.from_numpy(x[180:]),
        torch.from_numpy(y[180:]),
        cfg,
        on_epoch=lambda e, r: seen.append(r),
    )
    assert max(r["val_accuracy"] for r in seen) > 0.9
    assert seen == res.history and res.history[0]["rows_per_s"] > 0


def test_images_need_the_normaliser():
    x, y = toy_images(40)
    model = build("mnist_mlp", in_shape=[1, 8, 8], n_classes=3)
    with pytest.raises(ValueError, match="ImageNormaliser"):
        fit(model, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x), torch.from_numpy(y), CFG)


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


def test_rare_categories_share_one_other_column_in_training_and_in_scoring():
    schema = Schema(target="y", classes=["a", "b"], numeric=[], categorical=["c"])
    train = coerce_features(pd.DataFrame({"c": ["x"] * 6 + ["y"] * 5 + ["Rare Name", "617-555-0142"]}), schema)
    pre = Preprocessor(schema.numeric, schema.categorical, small_count=5).fit(train)
    assert pre.feature_names == ["c=x", "c=y", "c=<other>"]
    assert "Rare" not in json.dumps(pre.to_dict()) and "617" not in json.dumps(pre.to_dict())
    out = pre.transform(train)
    np.testing.assert_array_equal(out[-2:], [[0, 0, 1], [0, 0, 1]])  # rare in training -> <other>
    # Scoring maps a value unseen in training to the same column, and the bundle round-trips with it.
    scored = Preprocessor.from_dict(pre.to_dict()).transform(coerce_features(pd.DataFrame({"c": ["new", "y"]}), schema))
    np.testing.assert_array_equal(scored, [[0, 0, 1], [0, 1, 0]])


def test_preprocessor_writes_every_block_where_its_feature_names_say():
    schema = Schema(target="y", classes=["a", "b"], numeric=["u", "v"], categorical=["c", "d"])
    rows = pd.DataFrame({"u": ["0", "2"], "v": ["1", None], "c": ["x", "y"], "d": ["p", "p"]})
    train = coerce_features(rows, schema)
    pre = Preprocessor(schema.numeric, schema.categorical).fit(train)
    expected = {"u": [-1, 1], "v": [0, 0], "v__missing": [0, 1], "c=x": [1, 0], "c=y": [0, 1], "d=p": [1, 1]}
    assert pre.feature_names == list(expected)
    out = pre.transform(train)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, np.array(list(expected.values()), dtype="float32").T)
    assert Preprocessor([], ["c", "d"]).fit(train).transform(train).tolist() == [[1, 0, 1], [0, 1, 1]]


# --- the train step, on hand-written artifacts of validate/clean/split --------------------------------------


def write_upstream(paths, kind: str = "tabular", n: int = 200, seed: int = 0) -> None:
    """What validate, clean and split leave for train: cleaned rows, schema, (images,) manifest, summaries."""
    rng = np.random.default_rng(seed)
    for step in ("validate", "clean", "split"):
        paths.step_dir(step).mkdir(parents=True, exist_ok=True)
    if kind == "image":
        images, labels = toy_images(n, seed)
        np.save(paths.images, images)
        df = pd.DataFrame({"_row_id": np.arange(n), "_label": labels})
        schema = Schema(
            target="digit",
            classes=["a", "b", "c"],
            numeric=[],
            categorical=[],
            kind="image",
            image_shape=list(images.shape[1:]),
        )
    else:
        a, b = rng.normal(size=n), rng.normal(size=n)
        c = rng.choice(["x", "y"], n)
        df = pd.DataFrame({"_row_id": np.arange(n), "a": a, "b": b, "c": c, "_label": (a + b > 0).astype("int64")})
        schema = Schema(target="y", classes=["no", "yes"], numeric=["a", "b"], categorical=["c"])
    df.to_parquet(paths.cleaned, index=False)
    schema.save(paths.schema)
    split = np.where(np.arange(n) < 0.7 * n, "train", np.where(np.arange(n) < 0.85 * n, "val", "test"))
    pd.DataFrame({"row_id": np.arange(n), "split": split}).to_csv(paths.manifest, index=False)
    for step in ("validate", "clean"):
        paths.summary(step).write_text(json.dumps({"rows_in": n, "rows_quarantined": 0}))
    counts = pd.Series(split).value_counts().to_dict()
    paths.summary("split").write_text(json.dumps({"rows": {k: int(v) for k, v in counts.items()}}))


def step_params(**train):
    from medflow.params import Params

    return Params.model_validate({"data": {"source": "data/x.csv", "target": "y"}, "train": train})


def test_train_step_on_a_table_writes_bundle_run_and_summary(project, capsys):
    from mlflow import MlflowClient

    from medflow.steps import train

    write_upstream(project)
    project.data_docs.mkdir(parents=True)
    (project.data_docs / "index.html").write_text("<html><body>validate's Data Docs</body></html>\n")
    summary = train.run(step_params(max_epochs=6, patience=6, hidden=[8]), project)
    assert summary["epochs_run"] == 6 and summary["features"] == 4 and summary["world_size"] == 1
    assert {p.name for p in project.model_bundle.iterdir()} == {
        "weights.pt",
        "model.json",
        "preprocessor.json",
        "schema.json",
    }
    assert not project.checkpoint.exists()
    run_id = json.loads(project.train_run.read_text())["run_id"]
    assert json.loads(project.summary("train").read_text()) == summary
    run = MlflowClient(f"sqlite:///{project.mlflow_db}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["train_rows"] == 140
    client = MlflowClient(f"sqlite:///{project.mlflow_db}")
    assert [a.path for a in client.list_artifacts(run_id, "data_docs")] == ["data_docs/index.html"]
    assert "rows/s" in capsys.readouterr().out


def test_train_step_on_images_trains_a_vision_model_and_bundles_the_normaliser(project):
    from medflow.steps import train

    write_upstream(project, kind="image", n=240)
    summary = train.run(step_params(model="cifar_convnet", max_epochs=5, patience=5, batch_size=32), project)
    assert summary["image_shape"] == [8, 8, 1] and summary["train_rows"] == 168
    config = json.loads((project.model_bundle / "model.json").read_text())
    assert config == {"name": "cifar_convnet", "in_shape": [1, 8, 8], "n_classes": 3}
    images = np.load(project.images)
    norm = json.loads((project.model_bundle / "preprocessor.json").read_text())
    assert norm == ImageNormaliser.fit(images[:168]).to_dict()

    # What a Predictor does: rebuild from model.json, normalise uint8 NHWC with the bundled statistics.
    model = build(**config).eval()
    model.load_state_dict(torch.load(project.model_bundle / "weights.pt", weights_only=True))
    x = (torch.from_numpy(images[168:204]).permute(0, 3, 1, 2).float() - norm["mean"][0]) / norm["std"][0]
    labels = pd.read_parquet(project.cleaned)["_label"].to_numpy()[168:204]
    with torch.no_grad():
        accuracy = float((model(x).argmax(1).numpy() == labels).mean())
    assert accuracy == pytest.approx(summary["best_val_accuracy"]) and accuracy > 0.9


def test_the_steps_after_split_find_each_rows_split_by_its_id_in_the_manifest(project):
    from medflow.data import manifest

    write_upstream(project, n=40)
    listed = pd.read_csv(project.manifest).sample(frac=1, random_state=0)  # any order: rows are found by id
    listed.to_csv(project.manifest, index=False)
    df, _ = manifest.load_split(project)
    assert df["_split"].tolist() == listed.set_index("row_id").loc[df["_row_id"], "split"].tolist()
    found = manifest.lookup(project, "split", pd.Series([3, 999, 0]))
    assert found.iloc[[0, 2]].tolist() == listed.set_index("row_id").loc[[3, 0], "split"].tolist()
    assert found.isna().tolist() == [False, True, False]

    listed[listed["row_id"] != 7].to_csv(project.manifest, index=False)
    with pytest.raises(ValueError, match="1 cleaned row"):
        manifest.load_split(project)
    pd.concat([listed, listed.head(2)]).to_csv(project.manifest, index=False)
    with pytest.raises(ValueError, match="manifest.csv: 2 row id"):
        manifest.load_split(project)


def run_count(paths) -> int:
    import sqlite3

    with sqlite3.connect(paths.mlflow_db) as db:
        return db.execute("select count(*) from runs").fetchone()[0]


def test_train_step_refuses_a_model_of_the_other_kind_before_it_opens_a_run(project):
    from medflow.steps import train

    write_upstream(project, kind="image", n=60)
    with pytest.raises(ValueError, match="is for tables"):
        train.run(step_params(model="tabular_mlp"), project)
    assert run_count(project) == 0  # no FAILED run for a misconfiguration


def test_train_step_refuses_an_empty_validation_split_before_it_opens_a_run(project):
    from medflow.steps import train

    write_upstream(project, n=60)
    manifest = pd.read_csv(project.manifest)
    manifest.loc[manifest["split"] == "val", "split"] = "test"
    manifest.to_csv(project.manifest, index=False)
    counts = manifest["split"].value_counts().to_dict()
    project.summary("split").write_text(json.dumps({"rows": {k: int(v) for k, v in counts.items()}}))
    with pytest.raises(ValueError, match="the val split is empty"):
        train.run(step_params(), project)
    assert run_count(project) == 0


def test_a_run_that_cannot_open_stops_the_train_step_before_its_first_epoch(project):
    from medflow.params import Params
    from medflow.privacy.scanner import PhiLeak
    from medflow.steps import train

    write_upstream(project)
    leaky = step_params(max_epochs=3).as_dict()
    leaky["data"]["identifiers"] = ["MRN0001234"]  # a value where a column name belongs: PHI in the run's params
    with pytest.raises(PhiLeak, match="params of run"):
        train.run(Params.model_validate(leaky), project)
    assert run_count(project) == 0 and not project.checkpoint.exists()  # the first epoch writes one


# --- GPU: run with `pytest -m gpu` (bench/gpu.sh) on a machine with CUDA ------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def count_syncs(run) -> int:
    """Host-device synchronisations while run() runs, as CUDA's sync debug mode reports them."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def gpu_fit(n: int, epochs: int = 3, deterministic: bool = False, **kw):
    x, y = toy_images(n + 512, size=32, channels=3)
    seed_everything(0, deterministic)
    model = build("resnet_small", in_shape=[3, 32, 32], n_classes=3)
    cfg = image_cfg(x[:n], device="cuda", max_epochs=epochs, patience=epochs, batch_size=256, **kw)
    t = {k: torch.from_numpy(v) for k, v in {"x": x[:n], "y": y[:n], "xv": x[n:], "yv": y[n:]}.items()}
    return model, fit(model, t["x"], t["y"], t["xv"], t["yv"], cfg)


@pytest.mark.gpu
@needs_cuda
def test_gpu_resident_amp_channels_last_learns_without_per_step_syncs():
    model, res = gpu_fit(4096, augment_flip=True, augment_translate=2)
    assert res.history[-1]["val_accuracy"] > 0.95
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # 4x the steps per epoch, the same number of host syncs: none of them is per step.
    small = count_syncs(lambda: gpu_fit(1024, epochs=2, augment_flip=True, augment_translate=2))
    large = count_syncs(lambda: gpu_fit(4096, epochs=2, augment_flip=True, augment_translate=2))
    assert small == large, (small, large)


@pytest.mark.gpu
@needs_cuda
def test_gpu_streaming_from_host_memory_matches_the_resident_path():
    _, resident = gpu_fit(2048, deterministic=True, stream=False)
    _, streamed = gpu_fit(2048, deterministic=True, stream=True)
    assert strip(resident.history) == strip(streamed.history)  # the same kernels on the same batches


@pytest.mark.gpu
@needs_cuda
def test_gpu_compiled_model_trains_like_eager():
    _, eager = gpu_fit(2048, epochs=2)
    _, compiled = gpu_fit(2048, epochs=2, compile=True)
    assert compiled.history[-1]["val_accuracy"] == pytest.approx(eager.history[-1]["val_accuracy"], abs=0.05)


def test_image_normaliser_matches_per_channel_statistics_over_chunks():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 4, 4, 3), dtype=np.uint8)  # more than one 4096-image chunk
    norm = ImageNormaliser.fit(images)
    flat = images.reshape(-1, 3).astype("float64")
    np.testing.assert_allclose(norm.mean, flat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(norm.std, flat.std(0) + 1e-6, rtol=1e-6)


def test_seeding_makes_kernels_deterministic_through_torchs_public_switch():
    probe = (
        "import torch; from medflow.training.loop import seed_everything; seed_everything(0, True);"
        "import torch._inductor.config as compiler;"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        "compiler.deterministic)"
    )
    seeded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    # A compiled model's kernels too: torch.compile's inductor reads its own flag, which the public call sets.
    assert seeded.split() == ["True", "True", "True"]
