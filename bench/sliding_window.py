"""Sliding-window inference of a 512 x 512 x 300 synthetic CT-sized volume on the CPU, as `medflow predict` runs it
(imaging.network.Segmenter: window, MONAI's sliding_window_inference with Gaussian blending over 96^3 windows, the
label map), in a forked process whose peak RSS the kernel reports. The 3D U-Net is untrained: its cost does not
depend on its weights.

ours = peak RSS (MiB), baseline = the 4 GiB budget, ratio = ours / baseline (target <= 1); seconds recorded too.
Writes bench/results/sliding_window.json.

    .venv/bin/python bench/sliding_window.py [--shape 512 512 300] [--window 96]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import forked, load, write

from medflow.data.features import Schema
from medflow.imaging import network

BUDGET_MIB = 4096


def volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Noise around CT-like values with a bright ellipsoid, built a slab at a time (float32)."""
    rng = np.random.default_rng(seed)
    out = np.empty(shape, dtype=np.float32)
    x, y = np.ogrid[: shape[0], : shape[1]]
    for z in range(shape[2]):
        inside = ((x - shape[0] / 2) / (shape[0] / 4)) ** 2 + ((y - shape[1] / 2) / (shape[1] / 5)) ** 2 < 1 - (
            (z - shape[2] / 2) / (shape[2] / 3)
        ) ** 2
        out[:, :, z] = rng.normal(-100, 30, shape[:2]) + 200 * inside
    return out


def bundle(folder: Path, window: int) -> Path:
    config = {
        "name": "unet",
        "spatial_dims": 3,
        "out_channels": 2,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "patch_size": [window] * 3,
        "overlap": network.OVERLAP,
    }
    torch.manual_seed(0)
    pre = {"window": [-200.0, 300.0], "spacing": [1.0, 1.0, 1.0], "orientation": "RAS", "image_column": "image"}
    schema = Schema(target="mask", classes=["0", "1"], numeric=[], categorical=[], kind="image", outcome="segmentation")
    network.save(folder, network.build(config), config, pre, schema)
    return folder


def segment(folder: Path, image_file: Path) -> None:
    image = np.load(image_file, mmap_mode="r")
    labels = network.Segmenter(folder).predict(image)
    assert labels.shape == image.shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="a 128 x 128 x 64 volume, 32^3 windows (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.shape, args.window = [128, 128, 64], 32
    if args.threads:
        torch.set_num_threads(args.threads)
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        image_file = Path(tmp) / "volume.npy"
        np.save(image_file, volume(tuple(args.shape)))
        folder = bundle(Path(tmp) / "bundle", args.window)
        seconds, peak = forked(segment, folder, image_file)
    mb = np.prod(args.shape) * 4 / 2**20
    print(
        f"{'x'.join(map(str, args.shape))} volume ({mb:,.0f} MiB float32), {args.window}^3 windows: {seconds:.1f} s, "
        f"peak RSS {peak:,.0f} MiB (budget {BUDGET_MIB:,} MiB)",
        flush=True,
    )
    ratio = peak / BUDGET_MIB
    result = {
        "name": "sliding_window",
        "ours": round(peak, 1),
        "baseline": BUDGET_MIB,
        "ratio": round(ratio, 4),
        "unit": "MiB",
        "target": 1.0,
        "pairs": 1,
        "spread": [round(ratio, 4), round(ratio, 4)],
        "load": {"before": before, "after": load(), "cores": torch.get_num_threads()},
        "shape": args.shape,
        "window": args.window,
        "seconds": round(seconds, 1),
    }
    write(result)
    met = "meets" if ratio <= 1 else "misses"
    print(f"sliding_window: ratio {ratio:.3f} (peak {peak:,.0f} MiB / {BUDGET_MIB:,} MiB) {met} target <= 1.0")


if __name__ == "__main__":
    main()
