"""The pipeline's train step against the seed's loop: CIFAR-shaped uint8 data (32x32x3), cifar_convnet, the same
augmentation, epochs and threads.

The seed loop: a torch Dataset yielding PIL images with per-sample transforms (random flip, random crop with 4 px
of zero padding, to-tensor, normalise; in PIL/numpy, as torchvision is not installed), a DataLoader with workers,
and `.item()` per step. Ours: the whole train step (`medflow step train`: MLflow run, checkpoints, bundle) with
uint8 data on the device, flips and translations batched on the device, no per-step sync; on CUDA also bf16 and
channels_last. Ratio = ours / seed in seconds; target <= 1 on CPU, <= 0.1 on a GPU. Also printed: the train step's
img/s and steps/s at this batch size. Writes bench/results/train_vs_seed.json.

    .venv/bin/python bench/train_vs_seed.py [--n 2048 --pairs 5] [--device cuda --n 50000 --workers 8]
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import image_args, image_project, paired, parser, timed, train_step
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from medflow.data.features import ImageNormaliser
from medflow.models.tabular import build
from medflow.training.loop import seed_everything


class SeedDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, train: bool):
        self.images, self.labels, self.train = images, labels, train
        self.mean = np.asarray(mean, dtype=np.float32) / 255
        self.std = np.asarray(std, dtype=np.float32) / 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.train:
            if random.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            padded = np.pad(np.asarray(img), ((4, 4), (4, 4), (0, 0)))
            dy, dx = random.randint(0, 8), random.randint(0, 8)
            img = Image.fromarray(padded[dy : dy + 32, dx : dx + 32])
        arr = (np.asarray(img, dtype=np.float32) / 255 - self.mean) / self.std
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), int(self.labels[i])


def seed_run(args, x, y, xv, yv) -> None:
    device = torch.device(args.device)
    norm = ImageNormaliser.fit(x)
    loaders = [
        DataLoader(
            SeedDataset(a, b, norm.mean, norm.std, train),
            batch_size=args.batch,
            shuffle=train,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        for a, b, train in ((x, y, True), (xv, yv, False))
    ]
    seed_everything(0, deterministic=False)
    model = build(args.model, in_shape=[3, 32, 32], n_classes=10).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(args.epochs):
        model.train()
        running = correct = 0.0
        for xb, yb in loaders[0]:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            running += loss.item()
            correct += (out.argmax(1) == yb).sum().item()
        model.eval()
        with torch.no_grad():
            for xb, yb in loaders[1]:
                correct += (model(xb.to(device)).argmax(1) == yb.to(device)).sum().item()


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the seed loop")
    args, data = image_args(ap)
    gpu = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        paths = image_project(Path(tmp), data[0], data[1], len(data[2]))
        result = paired(
            args.name or "train_vs_seed",
            lambda: train_step(args, paths, augment_flip=True, augment_translate=4),
            lambda: timed(seed_run, args, *data),
            args.pairs,
            target=0.1 if gpu else 1.0,
            warmup=not args.no_warmup,
            device=args.device,
            model=args.model,
            n=args.n,
            epochs=args.epochs,
            batch=args.batch,
            workers=args.workers,
            threads=torch.get_num_threads(),
            compile=args.compile,
        )
    img_s = args.n * args.epochs / result["ours"]
    # What the seed reported: optimizer steps per second of its ConvNet at this batch size, here in the train step.
    print(f"train step, {args.model} at batch {args.batch}: {img_s:,.0f} img/s, {img_s / args.batch:,.1f} steps/s")


if __name__ == "__main__":
    main()
