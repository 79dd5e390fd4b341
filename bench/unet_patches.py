"""The 3D U-Net's training throughput in patches/s (MONAI's UNet as train.model=unet builds it, DiceCELoss, AdamW,
flips on the device, bf16 autocast on CUDA), then sliding-window inference of a 512 x 512 x 300 volume with the windows
on the device and the blended output accumulated on the host, as `medflow predict` runs a volume larger than the
device (peak device memory reported).

ours = seconds per patch of medflow's step (segmentation.train's flip + loss), baseline = a bare step on the same
patches (no flips), ratio = ours / baseline (target <= 1.1). Writes bench/results/unet_patches.json.

    .venv/bin/python bench/unet_patches.py --device cuda          (bench/gpu.sh)
    .venv/bin/python bench/unet_patches.py --quick                 (CPU, tiny: the tests)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import load, write

from medflow.imaging import network
from medflow.segmentation.train import flip


def step_seconds(model, opt, loss_fn, x, y, steps: int, device, flips: bool) -> float:
    gen = torch.Generator().manual_seed(0)
    amp = device.type == "cuda"
    if amp:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        xb, yb = flip(x, y, gen) if flips else (x, y)
        with torch.autocast(device.type, enabled=amp, dtype=torch.bfloat16):
            loss = loss_fn(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if amp:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    from monai.losses import DiceCELoss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300], help="the sliding-window volume")
    ap.add_argument("--quick", action="store_true", help="16^3 patches, 2 steps, 1 pair, a 32^3 volume (the tests)")
    args = ap.parse_args()
    if args.quick:
        args.patch, args.batch, args.steps, args.pairs, args.shape = 16, 2, 2, 1, [32, 32, 32]
    device = torch.device(args.device)
    config = {
        "name": "unet",
        "spatial_dims": 3,
        "out_channels": 2,
        "channels": [16, 32, 64, 128],
        "strides": [2, 2, 2],
        "num_res_units": 1,
        "patch_size": [args.patch] * 3,
        "overlap": network.OVERLAP,
    }
    torch.manual_seed(0)
    model = network.build(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    shape = (args.batch, 1, *[args.patch] * 3)
    x = torch.rand(shape, device=device)
    y = (torch.rand(shape, device=device) > 0.7).long()
    step_seconds(model, opt, loss_fn, x, y, 2, device, True)  # warm-up: kernels chosen, allocator filled
    before, ours, bare = load(), [], []
    for i in range(args.pairs):
        ours.append(step_seconds(model, opt, loss_fn, x, y, args.steps, device, True))
        bare.append(step_seconds(model, opt, loss_fn, x, y, args.steps, device, False))
        print(
            f"unet_patches pair {i + 1}/{args.pairs}: medflow {args.steps * args.batch / ours[-1]:.1f} patches/s, "
            f"bare {args.steps * args.batch / bare[-1]:.1f} patches/s",
            flush=True,
        )
    ratios = [a / b for a, b in zip(ours, bare, strict=True)]
    patches_per_s = args.steps * args.batch / float(np.median(ours))

    model.eval()
    image = np.random.default_rng(0).random(args.shape, dtype=np.float32)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = network.infer(model, image, config["patch_size"], device, output_device="cpu")
    infer_s = time.perf_counter() - start
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    assert tuple(out.shape[1:]) == tuple(args.shape)
    print(
        f"sliding window {'x'.join(map(str, args.shape))} on {device.type}, output on the host: {infer_s:.1f} s"
        + (f", peak device memory {peak_gib:.2f} GiB" if peak_gib is not None else ""),
        flush=True,
    )
    ratio = float(np.median(ratios))
    result = {
        "name": "unet_patches",
        "ours": round(float(np.median(ours)) / (args.steps * args.batch), 6),
        "baseline": round(float(np.median(bare)) / (args.steps * args.batch), 6),
        "ratio": round(ratio, 4),
        "unit": "s",
        "target": 1.1,
        "pairs": args.pairs,
        "spread": [round(min(ratios), 4), round(max(ratios), 4)],
        "load": {"before": before, "after": load(), "cores": torch.get_num_threads()},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "patch": args.patch,
        "batch": args.batch,
        "patches_per_s": round(patches_per_s, 1),
        "sliding_window": {"shape": args.shape, "seconds": round(infer_s, 1), "peak_device_gib": peak_gib},
    }
    write(result)
    print(
        f"unet_patches: {patches_per_s:.1f} patches/s of {args.patch}^3; ratio {ratio:.3f} to a bare step "
        f"(target <= 1.1)"
    )


if __name__ == "__main__":
    main()
