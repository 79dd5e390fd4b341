"""Resumable checkpoints: everything a restarted run needs to finish exactly as an uninterrupted one would.

A checkpoint holds the model, optimizer, grad scaler, every rank's RNG states, the epoch, the best weights,
the early-stopping counters and the history, under a fingerprint of the configuration and the data: a run
resumes only from a checkpoint of the same problem. Writes are atomic (tmp file + os.replace), so a process
killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medflow.console import say

# Settings that change how a run is kept, not what it computes.
_NOT_FINGERPRINTED = {"checkpoint", "checkpoint_every", "checkpoint_interval_s", "resume"}


def fingerprint(cfg: Any, model: nn.Module, world: int, tensors: tuple[torch.Tensor, ...]) -> str:
    """sha256 of the loop config, the model's structure (repr: layers, sizes, dropout rates), the world size
    (it decides each rank's shard and RNG streams) and the bytes of the data."""
    h = hashlib.sha256()
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    config["device"] = torch.device(cfg.device).type  # cuda:0 and cuda:1 compute the same
    h.update(json.dumps({"cfg": config, "model": repr(model), "world": world}, sort_keys=True, default=str).encode())
    for t in tensors:
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).data)
    return h.hexdigest()


def save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint at path when it was written for this fingerprint; None (and why) otherwise."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected:
        say(f"{path}: written for another configuration or data; starting from scratch")
        return None
    return state


def rng_state(*generators: torch.Generator) -> dict[str, Any]:
    """This process's RNG streams: torch's global CPU (and CUDA) state, which dropout draws from, and ours."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], *generators: torch.Generator) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)
