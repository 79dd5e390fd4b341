"""What the benchmarks share: CIFAR-shaped synthetic data, medflow's loop as a timed run, the comparison.

Each benchmark runs its two contenders in one process, interleaved one short run at a time (A, B, A, B, ...)
after a warm-up run of each, and reports the median of the paired ratios A_i / B_i: on a shared machine whose
load drifts by the minute, neighbouring runs see the same load, so the ratio holds still where absolute
numbers do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from medflow.data.features import ImageNormaliser
from medflow.models.tabular import build
from medflow.training.loop import FitConfig, fit, seed_everything

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="cifar_convnet")
    ap.add_argument("--n", type=int, default=512, help="training images")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1, help="per run")
    ap.add_argument("--repeats", type=int, default=20, help="interleaved runs of each")
    # One thread: on a shared 2-core box, 2 threads slow down several-fold whenever anything else runs.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    return ap


def cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 32, 32, 3] with 10 learnable classes (a bright band whose row depends on the class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 200, (n, 32, 32, 3))
    for k in range(10):
        x[y == k, 3 * k : 3 * k + 3] += 55
    return x.astype(np.uint8), y


def medflow_run(args, x, y, xv, yv, **cfg) -> list[float]:
    """Per-epoch img/s of medflow's loop (training plus the validation pass, as its history reports it)."""
    norm = ImageNormaliser.fit(x)
    seed_everything(0, deterministic=False)
    model = build(args.model, in_shape=[3, 32, 32], n_classes=10)
    config = FitConfig(
        lr=1e-3,
        weight_decay=0.0,
        batch_size=args.batch,
        max_epochs=args.epochs,
        patience=args.epochs,
        seed=0,
        device=args.device,
        mean=tuple(norm.mean),
        std=tuple(norm.std),
        **cfg,
    )
    t = [torch.from_numpy(a) for a in (x, y, xv, yv)]
    return [row["rows_per_s"] for row in fit(model, *t, config).history]


def compare(name: str, ours, baseline, args, unit: str = "img/s", **extra) -> dict:
    """ours() and baseline() each run args.epochs epochs and return their per-epoch throughputs."""
    ours(), baseline()  # warm-up: first-call costs (allocator, cuDNN autotuning, imports in workers)
    a, b = [], []
    for r in range(args.repeats):
        a += ours()
        b += baseline()
        print(f"repeat {r + 1}: medflow {a[-1]:,.0f}, baseline {b[-1]:,.0f} {unit}", flush=True)
    result = {
        "name": name,
        "ours": round(statistics.median(a), 1),
        "baseline": round(statistics.median(b), 1),
        "ratio": round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3),
        "unit": unit,
        **extra,
        "device": args.device,
        "model": args.model,
        "n": args.n,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name}: medflow {result['ours']:,.0f} {unit}, baseline {result['baseline']:,.0f} {unit}, "
        f"ratio {result['ratio']:.3f} (median of {args.repeats} paired runs)"
    )
    return result
