"""medflow's loop against a minimal bare PyTorch loop: same model, data, batch size, data on the device.

The bare loop is what one writes by hand: float images normalised once up front, a permutation per epoch, forward,
backward, step, and a validation pass; no metrics, no early stopping, no checkpoints. medflow's loop keeps uint8
images and normalises per batch, accumulates metrics on the device and keeps the best weights. Target: ratio
>= 0.97 on CPU.

    .venv/bin/python bench/train_vs_bare.py [--model mnist_mlp --n 8192] [--device cuda --n 50000]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from common import cifar_like, compare, medflow_run, parser

from medflow.data.features import ImageNormaliser
from medflow.models.tabular import build
from medflow.training.loop import seed_everything


def bare_run(args, x, y, xv, yv) -> list[float]:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    norm = ImageNormaliser.fit(x)
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
    std = torch.tensor(norm.std).view(1, -1, 1, 1)

    def prepare(a):
        return ((torch.from_numpy(a).permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=fmt).to(device)

    x, xv = prepare(x), prepare(xv)
    y, yv = torch.from_numpy(y).to(device), torch.from_numpy(yv).to(device)
    seed_everything(0, deterministic=False)
    model = build(args.model, in_shape=[3, 32, 32], n_classes=10).to(device, memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=cuda)
    speeds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), args.batch):
            idx = perm[i : i + args.batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            for i in range(0, len(xv), 2 * args.batch):
                model(xv[i : i + 2 * args.batch])
        if cuda:
            torch.cuda.synchronize()
        speeds.append(len(x) / (time.perf_counter() - t0))
    return speeds


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = cifar_like(args.n + 256)
    data = (x[: args.n], y[: args.n], x[args.n :], y[args.n :])
    compare("train_vs_bare", lambda: medflow_run(args, *data), lambda: bare_run(args, *data), args)


if __name__ == "__main__":
    main()
