"""Images larger than memory (train.memory_budget_mb): the streamed loader against training in memory, and peak
memory as the number of images grows.

    throughput  60,000 Fashion-MNIST-shaped images (28x28x1, synthetic): one epoch of mnist_mlp from memory vs
                streamed from the on-disk store, interleaved pairs; the ratio of images per second (target >= 0.8)
    memory      peak RSS of a fresh process that validates an NPY manifest in chunks and then trains one epoch
                streamed, at 20,000 and 200,000 images (target: within +-10%)
    loader      the same for the training alone, from a store written here (no image files)
    run         `medflow run` on a 100,000-image manifest with the budget below its size; the run's peak RSS

Each writes bench/results/image_streaming_<what>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BUDGET_MB = 16.0


def fashion_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 28, 28, 1] with 10 learnable classes (a bright band whose row depends on the class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 160, (n, 28, 28, 1), dtype=np.uint8)
    for k in range(10):
        x[y == k, 2 * k + 4 : 2 * k + 7] += 90
    return x, y


def write_manifest(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = fashion_like(n)
    for i in range(n):
        np.save(folder / f"{i}.npy", x[i, :, :, 0])
    rows = "".join(f"{i}.npy,c{y[i]}\n" for i in range(n))
    (folder / "manifest.csv").write_text("path,label\n" + rows)
    return folder / "manifest.csv"


def fit_once(x, y, train_rows, val_rows, budget: float | None) -> float:
    import torch

    from medflow.data.image_store import StoreRows
    from medflow.models.vision import MnistMLP
    from medflow.training.loop import FitConfig, fit

    labels = torch.from_numpy(y)
    if budget is None:
        xt, xv = torch.from_numpy(x.read(0, len(x))[train_rows]), torch.from_numpy(x.read(0, len(x))[val_rows])
    else:
        xt, xv = StoreRows(x, train_rows), StoreRows(x, val_rows)
    torch.manual_seed(0)
    cfg = FitConfig(
        lr=2e-3, weight_decay=0, batch_size=256, max_epochs=1, patience=1, seed=0, mean=(100.0,), std=(60.0,),
        augment_flip=True, memory_budget_mb=budget,
    )  # fmt: skip
    t = time.perf_counter()
    fit(MnistMLP([1, 28, 28], 10), xt, labels[train_rows], xv, labels[val_rows], cfg)
    return len(train_rows) / (time.perf_counter() - t)


def throughput(n: int, pairs: int) -> dict:
    import torch

    from medflow.data.image_store import ImageStore

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        x, y = fashion_like(n)
        np.save(Path(tmp) / "images.npy", x)
        store = ImageStore(Path(tmp) / "images.npy")
        rows = np.arange(n)
        train_rows, val_rows = rows[rows % 7 != 0], rows[rows % 7 == 0]
        fit_once(store, y, train_rows[:2048], val_rows[:512], None)  # warm-up
        memory, streamed = [], []
        for _ in range(pairs):
            memory.append(fit_once(store, y, train_rows, val_rows, None))
            streamed.append(fit_once(store, y, train_rows, val_rows, BUDGET_MB))
    ratios = [s / m for s, m in zip(streamed, memory, strict=True)]
    return {
        "images": n,
        "budget_mb": BUDGET_MB,
        "in_memory_img_s": round(statistics.median(memory)),
        "streamed_img_s": round(statistics.median(streamed)),
        "ratio": round(statistics.median(ratios), 3),
        "spread": [round(min(ratios), 3), round(max(ratios), 3)],
        "target": ">= 0.8",
    }


CHILD = """
import json, resource, sys
from pathlib import Path
import numpy as np, torch
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate
from medflow.data.image_store import ImageStore, StoreRows
from medflow.training.loop import FitConfig, fit
from medflow.models.vision import MnistMLP
torch.set_num_threads(1)
root, budget = Path(sys.argv[1]), float(sys.argv[2])
paths = Paths(root=root)
params = from_dict({"data": {"kind": "image", "source": "data/scans/manifest.csv", "target": "label"},
                    "train": {"model": "mnist_mlp", "memory_budget_mb": budget}})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = validate.run(params, paths)
after_validate = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = ImageStore(paths.step_dir("validate") / "images.npy")
import pandas as pd
y = pd.read_parquet(paths.valid_rows)["label"].str[1:].astype(int).to_numpy()
rows = np.arange(len(store))
cfg = FitConfig(lr=2e-3, weight_decay=0, batch_size=256, max_epochs=1, patience=1, seed=0, mean=(100.0,),
                std=(60.0,), memory_budget_mb=budget)
labels = torch.from_numpy(y)
fit(MnistMLP([1, 28, 28], 10), StoreRows(store, rows[rows % 7 != 0]), labels[rows % 7 != 0],
    StoreRows(store, rows[rows % 7 == 0]), labels[rows % 7 == 0], cfg)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows_valid": summary["rows_valid"], "imports_mb": base // 1024,
                  "validate_peak_mb": after_validate // 1024, "peak_mb": peak // 1024}))
"""


LOADER = """
import json, resource, sys
from pathlib import Path
import numpy as np, torch
from medflow.data.image_store import ImageStore, StoreRows
from medflow.training.loop import FitConfig, fit
from medflow.models.vision import MnistMLP
torch.set_num_threads(1)
store, budget = ImageStore(Path(sys.argv[1])), float(sys.argv[2])
y = torch.from_numpy(np.load(sys.argv[3]))
rows = np.arange(len(store))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = FitConfig(lr=2e-3, weight_decay=0, batch_size=256, max_epochs=1, patience=1, seed=0, mean=(100.0,),
                std=(60.0,), augment_flip=True, memory_budget_mb=budget)
fit(MnistMLP([1, 28, 28], 10), StoreRows(store, rows[rows % 7 != 0]), y[rows % 7 != 0],
    StoreRows(store, rows[rows % 7 == 0]), y[rows % 7 == 0], cfg)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"imports_mb": base // 1024, "peak_mb": peak // 1024}))
"""


def loader(sizes: list[int]) -> dict:
    """Peak RSS of a process that trains one epoch streamed from a store of n images (written in chunks here)."""
    from medflow.data.image_store import StoreWriter

    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            labels = []
            with StoreWriter(Path(tmp) / "images.npy", (28, 28, 1)) as store:
                for seed, lo in enumerate(range(0, n, 10_000)):
                    x, y = fashion_like(min(10_000, n - lo), seed)
                    store.append(x)
                    labels.append(y)
            np.save(Path(tmp) / "labels.npy", np.concatenate(labels))
            t = time.perf_counter()
            cmd = [sys.executable, "-c", LOADER, f"{tmp}/images.npy", str(BUDGET_MB), f"{tmp}/labels.npy"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[str(n)] = json.loads(done.stdout.strip().splitlines()[-1]) | {"s": round(time.perf_counter() - t)}
        print(n, out[str(n)], flush=True)
    peaks = [v["peak_mb"] for v in out.values()]
    return {"budget_mb": BUDGET_MB, "runs": out, "peak_ratio": round(max(peaks) / min(peaks), 3), "target": "<= 1.10"}


def memory(sizes: list[int]) -> dict:
    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            write_manifest(Path(tmp) / "data" / "scans", n)
            env = os.environ | {"MEDFLOW_SALT": "bench", "OMP_NUM_THREADS": "1"}
            done = subprocess.run(
                [sys.executable, "-c", CHILD, tmp, str(BUDGET_MB)], env=env, capture_output=True, text=True, check=True
            )
            out[str(n)] = json.loads(done.stdout.strip().splitlines()[-1]) | {"s": round(time.perf_counter() - t)}
        print(n, out[str(n)], flush=True)
    peaks = [v["peak_mb"] for v in out.values()]
    return {"budget_mb": BUDGET_MB, "runs": out, "peak_ratio": round(max(peaks) / min(peaks), 3), "target": "<= 1.10"}


def run(n: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    import yaml
    from usercmd import scratch_clone, sh

    # Not a TemporaryDirectory: deleting 100,000 files can take longer than the run; the path is printed.
    root = scratch_clone(Path(tempfile.mkdtemp(prefix="image-streaming-")) / "clone")
    print(f"clone: {root} (delete it when done)", flush=True)
    write_manifest(root / "data" / "scans", n)
    params = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    params["data"]["source"] = "data/scans/manifest.csv"
    params["train"] |= {"model": "mnist_mlp", "max_epochs": 2, "patience": 2, "memory_budget_mb": BUDGET_MB}
    params["register"] |= {"model_name": "streamed-100k", "min_primary": 0.5}
    (root / "streamed.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    wrapper = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(['.venv/bin/medflow', 'run', '--params', 'streamed.yaml']); "
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    t = time.perf_counter()
    done = sh(f'python3 -c "{wrapper}"', root, timeout=3600, MEDFLOW_SALT="bench")
    seconds = time.perf_counter() - t
    peak = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_KB")))
    train = json.loads((root / "artifacts" / "streamed" / "train" / "summary.json").read_text())
    metrics = json.loads((root / "artifacts" / "streamed" / "evaluate" / "metrics.json").read_text())
    return {
        "images": n,
        "decoded_mb": round(n * 784 / 2**20, 1),
        "budget_mb": BUDGET_MB,
        "peak_rss_mb": peak // 1024,
        "seconds": round(seconds),
        "train": {k: train[k] for k in ("train_rows", "val_rows", "streamed")},
        "test_accuracy": metrics.get("test_accuracy"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["throughput", "memory", "loader", "run"])
    ap.add_argument("--n", type=int, help="images (throughput: 60,000; run: 100,000)")
    ap.add_argument("--sizes", default="20000,200000", help="memory: image counts")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    if args.what == "throughput":
        result = throughput(args.n or 60_000, args.pairs)
    elif args.what == "memory":
        result = memory([int(s) for s in args.sizes.split(",")])
    elif args.what == "loader":
        result = loader([int(s) for s in args.sizes.split(",")])
    else:
        result = run(args.n or 100_000)
    result["load"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"image_streaming_{args.what}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
