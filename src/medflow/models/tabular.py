"""Models chosen by name in params: the name -> builder registry for tables, images and event sequences.

Tabular builders take the input width `n_in`; image builders (medflow.models.vision) take `in_shape` (C, H, W).
Sequence builders (medflow.models.sequence) take `n_in` channels and `steps` bins. All take `n_classes`. The
bundle's model.json holds the name plus these keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medflow.models import sequence, vision


class TabularMLP(nn.Module):
    def __init__(self, n_in: int, n_classes: int, hidden: list[int], dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


IMAGE_MODELS = frozenset(vision.BUILDERS)
SEQUENCE_MODELS = frozenset(sequence.BUILDERS)
TREE_MODEL = "xgboost"  # gradient-boosted trees (medflow.models.trees): no torch module, its own bundle file
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "tabular_mlp": lambda n_in, n_classes, hidden, dropout: TabularMLP(n_in, n_classes, hidden, dropout),
    **vision.BUILDERS,
    **sequence.BUILDERS,
}


def check_kind(model: str, kind: str) -> None:
    """Refuses a model built for another kind of data (kind: the Schema's: tabular, image, events or signals)."""
    if (kind in ("events", "signals")) != (model in SEQUENCE_MODELS):
        wanted = f"it needs one of {sorted(SEQUENCE_MODELS)}" if kind in ("events", "signals") else "it does not"
        raise ValueError(f"train.model={model!r} does not suit data.kind={kind}: {wanted}")
    if kind == "image" and model not in IMAGE_MODELS:
        raise ValueError(f"train.model={model!r} is for tables; image data needs one of {sorted(IMAGE_MODELS)}")
    if kind != "image" and model in IMAGE_MODELS:
        raise ValueError(f"train.model={model!r} is for images; tables need tabular_mlp or {TREE_MODEL}")


def build(name: str, **kwargs) -> nn.Module:
    if name not in BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](**kwargs)
