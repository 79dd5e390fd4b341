#!/usr/bin/env bash
# For a lent GPU machine (one CUDA device), in under ten minutes: the GPU tests (AMP + channels_last + the
# device-resident and streaming paths, no per-step host sync, torch.compile), then the seed ConvNet through the
# pipeline's train step against the seed-style loop and a bare loop (img/s, steps/s at batch 128, ratios in seconds),
# and 200 epochs of 10,000 CIFAR-shaped images, eager and compiled (targets: <= 60 s and <= 30 s on a current
# data-centre GPU; the ratio to the seed loop: <= 0.1); last, the 3D U-Net of data.task=segmentation in patches/s and
# a 512 x 512 x 300 volume by sliding windows. Needs the project's venv (torch with CUDA).
#   bash bench/gpu.sh            results land in bench/results/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# -m gpu overrides pyproject's default deselection; tests/conftest.py pins torch to one CPU thread.
timeout 240 "$PY" -m pytest -m gpu tests/test_training.py -q -p no:cacheprovider -rA

# 50k CIFAR-shaped images: the seed loop with 8 workers vs the train step (bf16, channels_last, data on the GPU).
timeout 240 "$PY" bench/train_vs_seed.py --device cuda --n 50000 --batch 128 --workers 8 --epochs 1 --pairs 3
timeout 120 "$PY" bench/train_vs_bare.py --device cuda --n 50000 --batch 128 --epochs 1 --pairs 3
# 200 epochs of the seed ConvNet at batch 128: wall seconds of the train step, eager then torch.compile.
long=(--device cuda --n 10000 --batch 128 --epochs 200 --pairs 1 --no-warmup)
timeout 150 "$PY" bench/train_vs_bare.py "${long[@]}" --name gpu_200_epochs_eager
timeout 180 "$PY" bench/train_vs_bare.py "${long[@]}" --compile --name gpu_200_epochs_compiled
# The 3D U-Net: training patches/s (96^3, batch 4, bf16, flips on the device), then a 512 x 512 x 300 volume by
# sliding windows on the GPU with the blended output on the host (peak device memory).
timeout 240 "$PY" bench/unet_patches.py --device cuda --patch 96 --batch 4 --steps 20 --pairs 3
