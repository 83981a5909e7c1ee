"""Tiny token models (random weights, built offline) shared by the token and timm tests."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def tiny_vit(**kwargs: object) -> nn.Module:
    """timm ViT: 32 px, 8 px patches (4 x 4 grid), 2 blocks of width 16, class token."""
    import timm

    torch.manual_seed(0)
    options: dict[str, object] = dict(
        img_size=32, patch_size=8, depth=2, embed_dim=16, num_heads=2, num_classes=3
    )
    options.update(kwargs)
    return timm.create_model("vit_tiny_patch16_224", **options).eval()


def tiny_tv_vit() -> nn.Module:
    """torchvision VisionTransformer: 32 px, 8 px patches, 2 layers of width 16."""
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    ).eval()


def tiny_swin() -> nn.Module:
    """timm Swin (channels-last stages): 32 px, 4 px patches, two stages, no stochastic depth."""
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=32,
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        num_classes=3,
        drop_path_rate=0.0,
    ).eval()


def tiny_tv_swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2], num_classes=3
    ).eval()


def tiny_convnext() -> nn.Module:
    """timm ConvNeXt (LayerNorm, GELU), one block per stage."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("convnext_atto", dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_classes=3).eval()
