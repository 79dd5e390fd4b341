#!/usr/bin/env bash
# For a lent GPU machine (one CUDA device), in under ten minutes: the GPU tests (AMP + channels_last + the
# device-resident and streaming paths, no per-step host sync, torch.compile), then img/s of medflow's loop
# against the seed-style loop and the bare loop, and steps/s of the seed ConvNet at batch 128.
# Needs torch with CUDA, numpy, pandas, pillow and pytest (no mlflow/pydantic: nothing here imports them).
#   bash bench/gpu.sh            results land in bench/results/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# -m gpu overrides pyproject's default deselection; tests/conftest.py pins torch to one CPU thread.
timeout 240 "$PY" -m pytest -m gpu tests/test_training.py -q -p no:cacheprovider -rA

# 50k CIFAR-shaped images: seed loop with 8 workers vs medflow (bf16, channels_last, data on the GPU).
timeout 240 "$PY" bench/train_vs_seed.py --device cuda --n 50000 --batch 128 --workers 8 --repeats 5
timeout 120 "$PY" bench/train_vs_bare.py --device cuda --n 50000 --batch 128 --repeats 10
