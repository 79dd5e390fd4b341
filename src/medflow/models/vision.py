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
    """Stem + 3 stages of 2 basic blocks (32/64/128 channels, stride 1/2/2) + global average pool.

    The global pool makes the head independent of the input size: 8x8 up to 64x64 (and beyond) work unchanged.
    """

    widths = (32, 64, 128)

    def __init__(self, in_shape: Sequence[int], n_classes: int = 10):
        super().__init__()
        cin = self.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.ReLU())
        blocks = []
        for i, width in enumerate(self.widths):
            blocks += [BasicBlock(cin, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)]
            cin = width
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


BUILDERS = {"mnist_mlp": MnistMLP, "cifar_convnet": ConvNet, "resnet_small": ResNetSmall}
