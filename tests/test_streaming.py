"""Images larger than train.memory_budget_mb: decoded in chunks into an on-disk store, trained streamed from it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from usercmd import REPO

from medflow.data.image_store import ImageStore, StoreRows
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import clean, validate
from medflow.training.data import StreamedSplit
from medflow.training.loop import FitConfig, fit


def manifest(folder, n: int, corrupt: int | None = None, size: int = 28):
    """n NPY images of size x size whose mean brightness says their class; row `corrupt` a truncated file."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % 3
        np.save(folder / f"{i}.npy", rng.integers(0, 96, (size, size), dtype=np.uint8) + np.uint8(60 * label))
        rows.append((f"{i}.npy", f"c{label}"))
    if corrupt is not None:
        (folder / f"{corrupt}.npy").write_bytes((folder / f"{corrupt}.npy").read_bytes()[:100])
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(folder / "manifest.csv", index=False)


def image_params(budget):
    data = {"kind": "image", "source": "data/scans/manifest.csv", "target": "label"}
    return from_dict({"data": data, "train": {"model": "mnist_mlp", "memory_budget_mb": budget}})


def test_chunked_validate_quarantines_a_corrupt_file_mid_chunk_and_matches_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_SALT", "s")
    project = Paths(root=tmp_path)
    manifest(project.data_dir / "scans", 300, corrupt=150)
    outputs = {}
    for budget in (None, 0.1):  # 0.1 MB: chunks of 33 images (a quarter of the budget), the corrupt one the 18th
        project.suite("manifest").unlink(missing_ok=True)  # both infer their suite
        summary = validate.run(image_params(budget), project)
        clean.run(image_params(budget), project)
        out = project.step_dir("validate")
        outputs[budget] = (
            summary,
            pd.read_parquet(project.valid_rows),
            (out / "quarantine.csv").read_text(),
            (out / "profile" / "profile.md").read_text(),
            np.load(out / "images.npy"),
            np.load(project.images),
        )
    streamed, whole = outputs[0.1], outputs[None]
    assert streamed[0].pop("decoded_in_chunks_of") == 33
    assert streamed[0] == whole[0] and streamed[0]["rows_valid"] == 299
    assert streamed[0]["quarantine_reasons"] == {"path: decode_failed": 1}
    pd.testing.assert_frame_equal(streamed[1], whole[1])
    assert streamed[2] == whole[2] and '150,"path: decode_failed (not a readable .npy array' in streamed[2]
    assert streamed[3] == whole[3]
    assert np.array_equal(streamed[4], whole[4]) and streamed[4].shape == (299, 28, 28, 1)
    assert np.array_equal(streamed[5], whole[5])


def store_of(tmp_path, x: np.ndarray) -> ImageStore:
    np.save(tmp_path / "images.npy", x)
    return ImageStore(tmp_path / "images.npy")


def test_every_row_once_an_epoch_in_windows_of_blocks(tmp_path):
    x = (np.arange(1000) % 256).astype(np.uint8).reshape(1000, 1, 1, 1)
    rows = np.flatnonzero(np.arange(1000) % 4 != 0)  # a split: 750 of the store's rows
    split = StreamedSplit(
        StoreRows(store_of(tmp_path, x), rows), torch.from_numpy(rows), torch.device("cpu"),
        torch.zeros(1), torch.ones(1), False, block_rows=40, window_blocks=3,
    )  # fmt: skip
    seen = [torch.cat([y for _, y in split.epoch(torch.Generator().manual_seed(s), 0, e, 64)]) for s, e in [(0, 1)] * 2]
    order, again = seen
    assert sorted(order.tolist()) == rows.tolist() and torch.equal(order, again)  # a permutation, reproducible
    other = torch.cat([y for _, y in split.epoch(torch.Generator().manual_seed(0), 0, 2, 64)])
    assert not torch.equal(order, other)
    # Rows far apart in the store share the first batch: blocks are shuffled, not read in turn.
    first = next(iter(split.epoch(torch.Generator().manual_seed(0), 0, 1, 64)))[1]
    assert first.max() - first.min() > 200
    assert [len(y) for _, y in split.in_order(64)] == [64] * 11 + [46]
    assert torch.cat([y for _, y in split.in_order(64)]).tolist() == rows.tolist()


@pytest.mark.parametrize("budget", [1000.0, 0.02])
def test_streamed_training_matches_in_memory(tmp_path, budget):
    """Budget 1000 MB: one window, so the order is the in-memory loop's and the weights come out identical. 0.02
    MB: windows of 64 store rows (another order), so the same validation accuracy within 0.05, 6 of its 120 rows:
    the classes are far apart, and both reach 0.95 whatever the order."""
    rng = np.random.default_rng(1)
    y = np.arange(600) % 3
    x = (rng.integers(0, 48, (600, 8, 8, 1)) + 80 * y[:, None, None, None]).astype(np.uint8)
    store = store_of(tmp_path, x)
    train_rows, val_rows = np.flatnonzero(np.arange(600) % 5 != 0), np.flatnonzero(np.arange(600) % 5 == 0)
    labels = torch.from_numpy(y)

    def trained(xt, xv, budget):
        from medflow.models.vision import MnistMLP

        torch.manual_seed(0)
        model = MnistMLP([1, 8, 8], 3)
        cfg = FitConfig(
            lr=1e-2, weight_decay=0, batch_size=32, max_epochs=5, patience=5, seed=0, mean=(100.0,), std=(50.0,),
            augment_flip=True, augment_translate=1, memory_budget_mb=budget,
        )  # fmt: skip
        result = fit(model, xt, labels[train_rows], xv, labels[val_rows], cfg)
        return model.state_dict(), result.history[-1]["val_accuracy"]

    memory, acc = trained(torch.from_numpy(x[train_rows]), torch.from_numpy(x[val_rows]), None)
    streamed, acc_streamed = trained(StoreRows(store, train_rows), StoreRows(store, val_rows), budget)
    if budget > 1:
        assert all(torch.equal(memory[k], streamed[k]) for k in memory)
    else:
        assert not all(torch.equal(memory[k], streamed[k]) for k in memory)
        assert abs(acc - acc_streamed) <= 0.05 and min(acc, acc_streamed) >= 0.95


PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(r.returncode)"
)


def peak_mb(root, step: str) -> int:
    """Peak RSS (MB) of `medflow step <step>` in a fresh process, as the kernel counts it."""
    medflow = str(Path(sys.executable).parent / "medflow")
    env = os.environ | {"MEDFLOW_SALT": "s"}
    cmd = [sys.executable, "-c", PEAK, medflow, "--root", str(root), "step", step]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.e2e
def test_memory_of_a_manifest_over_budget_does_not_grow_with_it(tmp_path):
    """2,000 NPY images of 128x128 (32 MB decoded) against a 4 MB budget train streamed, and validate's and clean's
    peaks stay within budget + 24 MB of theirs on 200 of the same images (3 MB): every byte of pixels they hold at
    once is in a chunk the budget sizes (validate: a quarter of it decoded, then stacked and squared; clean: half of
    it read, then gathered), and 24 MB covers the rest that grows with rows (the table, the hashes). Reading the whole
    set, validate would hold its 32 MB twice over."""
    peaks = {}
    for n in (200, 2000):
        root = tmp_path / str(n)
        manifest(root / "data" / "scans", n, size=128)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"] |= {"kind": "image", "source": "data/scans/manifest.csv", "target": "label"}
        params["data"] |= {"positive_class": None, "patient_id": None, "identifiers": []}
        params["train"] |= {"model": "mnist_mlp", "max_epochs": 1, "memory_budget_mb": 4}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        peaks[n] = {step: peak_mb(root, step) for step in ("validate", "clean")}
    for step in ("validate", "clean"):
        assert peaks[2000][step] <= peaks[200][step] + 4 + 24, peaks
    peak_mb(root, "split")
    peak_mb(root, "train")
    trained = json.loads((root / "artifacts" / "train" / "summary.json").read_text())
    assert trained["streamed"] and trained["train_rows"] + trained["val_rows"] > 1600


def test_the_gate_baselines_fit_a_seeded_sample_and_score_the_test_images_in_chunks(tmp_path, monkeypatch):
    """The register gate's image baselines never hold the training split: the probe's sample and each test chunk
    are read from the store, and the result is the probe fitted in memory on the same sample, rows in test order."""
    from sklearn.linear_model import LogisticRegression

    from medflow.evaluation.baselines import flat_pixels, image_baselines

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    x = (y[:, None, None, None] * 80 + rng.integers(0, 60, (400, 6, 6, 1))).astype(np.uint8)
    store = store_of(tmp_path, x)
    reads, read = [], ImageStore.read
    monkeypatch.setattr(ImageStore, "read", lambda s, lo, hi, out=None: reads.append(hi - lo) or read(s, lo, hi, out))
    order = rng.permutation(400)
    train, test = order[:300], order[300:]  # neither ascending: outputs must come back in the order asked for
    out, fitted = image_baselines(store, train, y[train], test, 3, seed=0, probe_rows=50, chunk_rows=16)

    assert fitted == 50 and max(reads) <= 16  # at most a chunk of the store held at once
    assert np.allclose(out["majority_class"], np.bincount(y[train], minlength=3) / 300)
    keep = train[np.random.default_rng(0).choice(300, 50, replace=False)]
    probe = LogisticRegression(C=1.0, max_iter=1000).fit(flat_pixels(x[keep]), y[keep])
    assert np.allclose(out["logistic_regression"], probe.predict_proba(flat_pixels(x[test])), atol=1e-6)
    assert (out["logistic_regression"].argmax(1) == y[test]).mean() > 0.9
