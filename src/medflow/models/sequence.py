"""Sequence models over a stay's grid ([batch, bins, channels]: standardised values carried forward, masks, hours
since the last value; medflow.sequences.grid) or a record's leads ([batch, samples, leads]; medflow.signals). Each
builder takes the channel count, the bins, the classes, the width (train.hidden[0]), the layers (len(train.hidden))
and dropout; all answer one logit per class."""

from __future__ import annotations

import torch
from torch import nn


class Recurrent(nn.Module):
    """GRU or LSTM; the head reads the last bin's state, the one at the prediction time."""

    def __init__(self, cell: str, n_in: int, n_classes: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(n_in, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Transformer(nn.Module):
    """A small Transformer encoder: bins as tokens with a learned position per bin, mean-pooled."""

    def __init__(self, n_in: int, n_classes: int, hidden: int, layers: int, dropout: float, steps: int, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(n_in, hidden)
        self.position = nn.Parameter(torch.zeros(1, steps, hidden))
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x) + self.position).mean(1))


def _recurrent(cell: str):
    def build(n_in: int, n_classes: int, hidden: int, layers: int, dropout: float, steps: int) -> nn.Module:
        return Recurrent(cell, n_in, n_classes, hidden, layers, dropout)

    return build


class CNN1d(nn.Module):
    """Signals: `layers` blocks of convolution (kernel 7), batch norm, ReLU and halving, then the mean over time."""

    def __init__(self, n_in: int, n_classes: int, hidden: int, layers: int, dropout: float, steps: int):
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_in
        for _ in range(layers):
            blocks += [nn.Conv1d(width, hidden, 7, padding=3, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            blocks.append(nn.MaxPool1d(2))
            width = hidden
        self.net = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x.transpose(1, 2)).mean(2))


BUILDERS = {"gru": _recurrent("gru"), "lstm": _recurrent("lstm"), "transformer": Transformer, "cnn1d": CNN1d}


def options(train, n_in: int, steps: int) -> dict:
    """The builder's keyword arguments (train: TrainParams); the bundle's model.json keeps them."""
    layers = len(train.hidden)
    return {"n_in": n_in, "steps": steps, "hidden": train.hidden[0], "layers": layers, "dropout": train.dropout}
