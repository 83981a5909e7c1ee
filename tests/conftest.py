"""Shared tiny models and inputs. No test downloads weights or data."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv-bn-relu x2, global pool, linear head: small enough for gradcheck in float64."""

    def __init__(
        self, in_ch: int = 3, width: int = 4, classes: int = 3, dims: int = 2, head_relu: bool = False
    ):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.features = nn.Sequential(
            conv(in_ch, width, 3, padding=1),
            bn(width),
            nn.ReLU(inplace=True),
            conv(width, width, 3, padding=1, stride=2),
            bn(width),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(width, classes)]
        if head_relu:
            head = [nn.Flatten(), nn.Linear(width, 6), nn.ReLU(), nn.Linear(6, classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return randomize_bn(TinyCNN()).eval()


@pytest.fixture
def tiny3d() -> TinyCNN:
    torch.manual_seed(0)
    return randomize_bn(TinyCNN(dims=3)).eval()
