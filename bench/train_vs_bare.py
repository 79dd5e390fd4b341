"""The pipeline's train step against a minimal bare PyTorch loop: same model, data, batch size, epochs, threads.

The bare loop is what one writes by hand: float images normalised once up front, a permutation per epoch, forward,
backward, step, and a validation pass; no metrics, no early stopping, no checkpoints, no tracking. Ours is the
whole train step as the pipeline runs it (`medflow step train`): reading the split, the MLflow run with its
params, dataset and metrics, checkpoints (train.checkpoint_interval_s), the best weights and the model bundle.
Ratio = ours / bare in seconds; target <= 1.10 on CPU. Writes bench/results/train_vs_bare.json.

    .venv/bin/python bench/train_vs_bare.py [--n 2048 --epochs 2 --pairs 5] [--device cuda --n 50000]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import image_args, image_project, paired, parser, timed, train_step

from medflow.data.features import ImageNormaliser
from medflow.models.tabular import build
from medflow.training.loop import seed_everything


def bare_run(args, x, y, xv, yv) -> None:
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
    net = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=cuda)
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), args.batch):
            idx = perm[i : i + args.batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(net(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            for i in range(0, len(xv), 2 * args.batch):
                net(xv[i : i + 2 * args.batch])
        if cuda:
            torch.cuda.synchronize()


def main() -> None:
    args, data = image_args(parser(__doc__.splitlines()[0]))
    with tempfile.TemporaryDirectory() as tmp:
        paths = image_project(Path(tmp), data[0], data[1], len(data[2]))
        result = paired(
            args.name or "train_vs_bare",
            lambda: train_step(args, paths),
            lambda: timed(bare_run, args, *data),
            args.pairs,
            target=1.10,
            warmup=not args.no_warmup,
            device=args.device,
            model=args.model,
            n=args.n,
            epochs=args.epochs,
            batch=args.batch,
            threads=torch.get_num_threads(),
            compile=args.compile,
        )
    print(f"train step: {args.n * args.epochs / result['ours']:,.0f} img/s including its fixed costs")


if __name__ == "__main__":
    main()
