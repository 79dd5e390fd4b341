"""What `medflow run` does to a table, written as one bare script: the baseline of bench/pipeline.py.

Reads the CSV, parses the numeric columns and one-hot encodes the others, drops the rows with values outside
the reference range (or nothing at all), splits 70/15/15 stratified by the outcome, imputes and standardises on the
training split, trains the same MLP (medflow's TabularMLP, AdamW, balanced class weights, early stopping on the
validation loss keeping the best weights) on the same torch threads, scores the test split with a vectorised
bootstrap of the ROC-AUC, and saves the weights and the metrics. No tracking, orchestration, lineage or registry.

    .venv/bin/python bench/bare_pipeline.py CSV TARGET POSITIVE OUT_DIR [--epochs 200 --patience 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from medflow.models.tabular import TabularMLP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("csv", "target", "positive", "out"):
        ap.add_argument(name)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--drop", nargs="*", default=[], help="identifier columns")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)

    df = pd.read_csv(args.csv, engine="pyarrow").drop(columns=args.drop)
    y = (df.pop(args.target).astype(str) == args.positive).to_numpy().astype("int64")
    numbers = df.apply(pd.to_numeric, errors="coerce")
    numeric = numbers.columns[numbers.notna().mean() >= 0.9 * df.notna().mean()]
    x = numbers[numeric].to_numpy(dtype="float64")
    if len(numeric) < len(df.columns):
        x = np.hstack([x, pd.get_dummies(df.drop(columns=numeric).astype(str), dtype="float64").to_numpy()])
    lo, hi = np.nanquantile(x, 0.005, axis=0), np.nanquantile(x, 0.995, axis=0)
    span = hi - lo
    outside = (x < lo - 2 * span) | (x > hi + 2 * span)
    keep = ~(np.isnan(x).all(axis=1) | outside.any(axis=1))
    x, y = x[keep], y[keep]

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.15, random_state=42, stratify=y)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, random_state=42, stratify=y[rest])
    median = np.nanmedian(x[train], axis=0)
    x = np.where(np.isnan(x), median, x)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-12
    t = torch.from_numpy(((x - mean) / std).astype("float32"))
    ty = torch.from_numpy(y)

    model = TabularMLP(x.shape[1], 2, [64, 32], 0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    counts = np.bincount(y[train], minlength=2)
    weight = torch.tensor(len(train) / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    xt, yt, xv, yv = t[train], ty[train], t[val], ty[val]
    best, best_state, stale = np.inf, None, 0
    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(model(xt[b]), yt[b], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(xv), yv).item()
        if val_loss < best - 1e-6:
            best, stale, best_state = val_loss, 0, {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= args.patience:
                break
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best_state)

    with torch.no_grad():
        p = torch.softmax(model(t[test]), 1)[:, 1].numpy()
    yt_ = y[test]
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(p), (1000, len(p)))
    ys, ps = yt_[draws], p[draws]
    ranks = np.argsort(np.argsort(ps, axis=1), axis=1) + 1
    pos = ys.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = ((ranks * ys).sum(axis=1) - pos * (pos + 1) / 2) / (pos * (len(p) - pos))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    metrics = {"test_roc_auc_ci": np.nanpercentile(aucs, [2.5, 97.5]).tolist(), "n_test": len(p)}
    metrics["train_seconds"] = round(train_seconds, 3)  # what bench/pipeline.py --long checks is >= 30 s
    (out / "metrics.json").write_text(json.dumps(metrics) + "\n")


if __name__ == "__main__":
    main()
