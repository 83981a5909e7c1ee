"""Small residual networks (2D and 3D) that train on a laptop CPU: ``small`` and ``small3d``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SmallResNet"]


class _Block(nn.Module):
    """Basic residual block (two 3x3 convolutions), 2D or 3D."""

    def __init__(self, cin: int, cout: int, stride: Any, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.bn2 = bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:  # tuple strides always differ from 1
            self.down = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), bn(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.down(x))


class SmallResNet(nn.Module):
    """A 4-stage residual network small enough to train on a laptop CPU.

    Same layout as torchvision's ResNets (``stem``, ``layer1``..``layer4``, ``avgpool``, ``fc``),
    so ``layer4`` is its Grad-CAM layer; ``dims=3`` makes the video variant (time is downsampled
    once, in ``layer3``).

    Args:
        num_classes: size of the output.
        width: channels of ``layer1``; doubled at each later stage.
        dims: 2 for images ``(B, C, H, W)``, 3 for clips ``(B, C, T, H, W)``.
        in_channels: input channels.
    """

    def __init__(self, num_classes: int, width: int = 16, dims: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        first: Any = 2 if dims == 2 else (1, 2, 2)
        self.stem = nn.Sequential(
            conv(in_channels, width, 3, stride=first, padding=1, bias=False), bn(width), nn.ReLU(inplace=True)
        )
        w = [width, 2 * width, 4 * width, 8 * width]
        strides: list[Any] = [1, 2, 2, 2] if dims == 2 else [1, (1, 2, 2), 2, (1, 2, 2)]
        cin = width
        for i, (cout, stride) in enumerate(zip(w, strides), start=1):
            setattr(self, f"layer{i}", _Block(cin, cout, stride, dims))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
