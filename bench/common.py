"""What the benchmarks share: CIFAR-shaped synthetic data, medflow's loop as a timed run, the comparison.

Each benchmark runs its two contenders interleaved one run at a time (A, B, A, B, ...) after a warm-up run of
each, and reports the median of the paired ratios A_i / B_i of seconds (lower is better) with their min-max: on a
shared machine whose load drifts by the minute, neighbouring runs see the same load, so the ratio holds still where
absolute numbers do not. Every benchmark writes bench/results/<name>.json with name, ours, baseline, ratio, unit,
target, pairs, spread and load (the load averages before and after, and the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medflow.paths import Paths

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="cifar_convnet")
    ap.add_argument("--n", type=int, default=512, help="training images")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="per run")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved runs of each, after a warm-up of each")
    ap.add_argument("--quick", action="store_true", help="64 images, one epoch, one pair, no warm-up (the tests)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs (long runs, one pair)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile) in both")
    ap.add_argument("--name", help="results file name (default: the benchmark's)")
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


def image_project(root: Path, x: np.ndarray, y: np.ndarray, n_val: int) -> Paths:
    """What validate, clean and split leave for train, for uint8 images x and labels y (the last n_val rows are
    the validation split): so that a benchmark times the pipeline's real train step on exactly the bare loop's data."""
    from medflow.data.columns import LABEL, ROW_ID
    from medflow.data.features import Schema

    paths = Paths(root=root)
    for step in ("validate", "clean", "split"):
        paths.step_dir(step).mkdir(parents=True, exist_ok=True)
    n = len(x)
    np.save(paths.images, x)
    pd.DataFrame({ROW_ID: np.arange(n), LABEL: y.astype("int64")}).to_parquet(paths.cleaned, index=False)
    classes = [str(c) for c in range(int(y.max()) + 1)]
    shape = list(x.shape[1:])
    schema = Schema(target="label", classes=classes, numeric=[], categorical=[], kind="image", image_shape=shape)
    schema.save(paths.schema)
    split = np.where(np.arange(n) < n - n_val, "train", "val")
    pd.DataFrame({"row_id": np.arange(n), "split": split}).to_csv(paths.manifest, index=False)
    for step in ("validate", "clean"):
        paths.summary(step).write_text(json.dumps({"rows_in": n, "rows_quarantined": 0}))
    counts = {"train": n - n_val, "val": n_val, "test": 0}
    paths.summary("split").write_text(json.dumps({"rows": counts}))
    return paths


def train_step(args, paths: Paths, **train) -> float:
    """Seconds of the pipeline's train step (`medflow step train` in-process: MLflow run, checkpoints, bundle)."""
    from medflow.params import from_dict
    from medflow.pipeline import run_step

    settings = {
        "model": args.model,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": args.batch,
        "max_epochs": args.epochs,
        "patience": args.epochs,
        "class_weights": "none",
        "device": args.device,
        "deterministic": False,
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        **train,
    }
    params = from_dict({"data": {"kind": "image", "source": "bench", "target": "label"}, "train": settings})
    return timed(run_step, "train", params, paths)


# --- Benchmarks timed in seconds (every JSON: ratio = ours / baseline, lower is better) ----------------------


def load() -> list[float]:
    """1-, 5- and 15-minute load averages, with the cores: what else the machine was doing."""
    return [round(x, 2) for x in os.getloadavg()]


def write(result: dict) -> dict:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{result['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def paired(name: str, ours, baseline, pairs: int, target: float, warmup: bool = True, **extra) -> dict:
    """ours() and baseline() each return seconds; run A B A B ... after one warm-up of each, and report the median
    of the paired ratios A_i / B_i with their min-max, the median seconds of each, and the load before and after."""
    before = load()
    if warmup:
        ours(), baseline()
    a, b = [], []
    for i in range(pairs):
        a.append(ours())
        b.append(baseline())
        print(f"{name} pair {i + 1}/{pairs}: ours {a[-1]:.3f} s, baseline {b[-1]:.3f} s", flush=True)
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    result = {
        "name": name,
        "ours": round(statistics.median(a), 6),
        "baseline": round(statistics.median(b), 6),
        "ratio": round(statistics.median(ratios), 4),
        "unit": "s",
        "target": target,
        "pairs": pairs,
        "spread": [round(min(ratios), 4), round(max(ratios), 4)],
        "load": {"before": before, "after": load(), "cores": os.cpu_count()},
        **extra,
    }
    write(result)
    print(summary(result), flush=True)
    return result


def summary(r: dict) -> str:
    met = "meets" if r["ratio"] <= r["target"] else "misses"
    return (
        f"{r['name']}: ratio {r['ratio']:.3f} (min-max {r['spread'][0]:.3f}-{r['spread'][1]:.3f}, {r['pairs']} pairs; "
        f"ours {r['ours']:.3f} {r['unit']}, baseline {r['baseline']:.3f} {r['unit']}) {met} target <= {r['target']}"
    )


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def forked(fn, *args) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of fn(*args) run in a forked child, the parent's imports inherited; its peak
    from the kernel's accounting of that process alone."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the exit status, the parent raises
            print(f"failed: {type(exc).__name__}: {exc}", flush=True)
            code = 1
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}{args} failed")
    return seconds, usage.ru_maxrss / 1024


def run_seconds(command: list[str], cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of a command run as a user runs it; fails loudly (with its output's tail) when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return seconds


def lab_table(rows: int, cols: int = 32, seed: int = 0, bad: float = 1e-4) -> pd.DataFrame:
    """rows x cols of what an export holds: a visit id, numeric labs (2% missing, a few cells of text or absurd
    magnitude), every eighth column categorical, and a binary outcome that depends weakly on three labs."""
    rng = np.random.default_rng(seed)
    # Visit ids in no order: ids counting the rows would be refused as a row index the export wrote.
    data: dict[str, np.ndarray] = {"visit": rng.permutation(rows) + 1_000_000}
    for i in range(cols - 2):
        if i % 8 == 7:
            data[f"cat_{i}"] = rng.choice(np.array(["low", "mid", "high"], dtype=object), rows)
        else:
            x = rng.normal(50 + i, 10, rows).round(2)
            x[rng.random(rows) < 0.02] = np.nan
            data[f"lab_{i}"] = x
    logit = (np.nan_to_num(data["lab_0"], nan=50) - 50) / 10 + (np.nan_to_num(data["lab_1"], nan=51) - 51) / 20
    data["outcome"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no").astype(object)
    df = pd.DataFrame(data)
    text = df["lab_2"].astype(object)
    picks = rng.choice(rows, max(1, int(rows * bad)), replace=False)
    text.iloc[picks[: len(picks) // 2]] = "see note"
    text.iloc[picks[len(picks) // 2 :]] = 1e18
    df["lab_2"] = text
    return df


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """CSV through pyarrow: pandas' writer takes a minute for a million rows."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(df.astype({c: str for c in df.columns if df[c].dtype == object}), preserve_index=False)
    pacsv.write_csv(table, path)
    return path


def image_args(ap: argparse.ArgumentParser):
    """Parsed arguments, --quick applied, torch's threads set; and CIFAR-shaped train + validation images."""
    args = ap.parse_args()
    if args.quick:
        args.n, args.epochs, args.pairs, args.no_warmup = 64, 1, 1, True
    if args.threads:
        torch.set_num_threads(args.threads)
    n_val = max(32, args.n // 8)
    x, y = cifar_like(args.n + n_val)
    return args, (x[: args.n], y[: args.n], x[args.n :], y[args.n :])


def table_project(root: Path, rows: int, cols: int = 32, seed: int = 0) -> Paths:
    """What validate, clean and split leave for train, for a generated table of numeric labs (70/15/15 split)."""
    from medflow.data.features import Schema

    rng = np.random.default_rng(seed)
    paths = Paths(root=root)
    for step in ("validate", "clean", "split"):
        paths.step_dir(step).mkdir(parents=True, exist_ok=True)
    x = rng.normal(size=(rows, cols))
    label = (rng.random(rows) < 1 / (1 + np.exp(-(x[:, 0] + 0.5 * x[:, 1] - 0.5 * x[:, 2])))).astype("int64")
    names = [f"lab_{i}" for i in range(cols)]
    df = pd.DataFrame(x, columns=names).assign(_row_id=np.arange(rows), _label=label)
    df.to_parquet(paths.cleaned, index=False)
    Schema(target="outcome", classes=["no", "yes"], numeric=names, categorical=[]).save(paths.schema)
    split = rng.choice(["train", "val", "test"], rows, p=[0.7, 0.15, 0.15])
    pd.DataFrame({"row_id": np.arange(rows), "split": split}).to_csv(paths.manifest, index=False)
    for step in ("validate", "clean"):
        paths.summary(step).write_text(json.dumps({"rows_in": rows, "rows_quarantined": 0}))
    counts = pd.Series(split).value_counts().to_dict()
    paths.summary("split").write_text(json.dumps({"rows": {k: int(v) for k, v in counts.items()}}))
    return paths
