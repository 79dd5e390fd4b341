"""Image models chosen by name in params; each builder takes the input shape (C, H, W) and the number of classes.

Inputs are float NCHW, already normalised with the training split's per-channel mean/std (ImageNormaliser).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MnistMLP(nn.Sequential):
    """The seed's MNIST baseline: one hidden layer of 128 units."""

    def __init__(self, in_shape: Sequence[int], n_classes: int = 10):
        c, h, w = in_shape
        super().__init__(nn.Flatten(), nn.Linear(c * h * w, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, n_classes))


class ConvNet(nn.Sequential):
    """The seed's CIFAR ConvNet. Its head was hard-coded to 7*7*128 (right for 28x28 only): sized from the input."""

    def __init__(self, in_shape: Sequence[int], n_classes: int = 10):
        c, h, w = in_shape

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

        super().__init__(*block(c, 64), *block(64, 128), nn.Flatten(), nn.Linear(128 * (h // 4) * (w // 4), n_classes))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # A 1x1 projection only where the shape changes; elsewhere the identity keeps gradients short.
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNetSmall(nn.Module):
    """Stem + one stage per entry of `channels` (stride 1, then 2), `blocks` basic blocks each, + global average pool.
    Trained from scratch: no pretrained weights, so nothing is downloaded.

    The global pool makes the head independent of the input size: 8x8 up to 64x64 (and beyond) work unchanged.
    """

    def __init__(
        self, in_shape: Sequence[int], n_classes: int = 10, channels: Sequence[int] = (32, 64, 128), blocks: int = 2
    ):
        super().__init__()
        cin = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.ReLU())
        layers = []
        for i, width in enumerate(channels):
            layers.append(BasicBlock(cin, width, 1 if i == 0 else 2))
            layers += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def options(name: str, train) -> dict:
    """The builder's keyword arguments that params set (train: TrainParams); the bundle's model.json keeps them."""
    if name == "resnet_small":
        return {"channels": list(train.channels), "blocks": train.blocks}
    return {}


BUILDERS = {"mnist_mlp": MnistMLP, "cifar_convnet": ConvNet, "resnet_small": ResNetSmall}
