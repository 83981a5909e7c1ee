"""Reading a layer's output as a spatial feature map: CNN maps, ViT tokens, channels-last maps.

Grad-CAM needs a feature map ``(B, K, *spatial)``. Three layouts are read:

* **channels first** ``(B, K, *spatial)`` (CNNs), used as is;
* **channels last** ``(B, H, W, C)`` (Swin-style stages, timm models that declare
  ``output_fmt = "NHWC"``, torchvision's ``SwinTransformer``), moved to ``(B, C, H, W)``;
* **tokens** ``(B, P + h*w, D)`` (Vision Transformers): the ``P`` prefix tokens (class,
  distillation, register tokens) are dropped and the ``h*w`` patch tokens, in row-major order, are
  reshaped to ``(B, D, h, w)``.

The patch grid ``(h, w)`` comes from the model when it says it -- timm's
``patch_embed.dynamic_feat_size(image size)`` (``patch_embed.grid_size``) and
``num_prefix_tokens``, torchvision's ``VisionTransformer.patch_size`` and the input size -- and
is otherwise inferred from the token count: the fewest prefix tokens ``P`` (0 to 16) such that
``N - P = h * w`` with ``h : w`` the input's aspect ratio (exactly, else within 10%). :class:`TargetLayer` overrides any of
it. Clips with token layers need an explicit ``grid=(t, h, w)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["Layout", "ModelHints", "TargetLayer", "from_spatial", "model_hints", "read_layout", "to_spatial"]


@dataclass(frozen=True)
class TargetLayer:
    """A Grad-CAM target layer with an explicit reading of its output.

    Pass it wherever a ``target_layer`` is taken when the automatic reading (module docstring)
    does not fit, e.g. ``TargetLayer("blocks.5.norm1", grid=(12, 16), prefix_tokens=5)``.

    Attributes:
        layer: dotted name or submodule; None for the default layer
            (:func:`atcon.attention.find_target_layer`).
        grid: patch grid ``(h, w)`` (``(t, h, w)`` for clips) of a token output.
        prefix_tokens: leading tokens that are not patches; None: ``N - prod(grid)``.
        channels_last: read a 4-D / 5-D output as ``(B, *spatial, C)`` (True) or
            ``(B, C, *spatial)`` (False); None: as the model declares.
    """

    layer: str | nn.Module | None = None
    grid: tuple[int, ...] | None = None
    prefix_tokens: int | None = None
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.grid is not None and (len(self.grid) not in (2, 3) or min(self.grid) < 1):
            raise ValueError(f"grid must be (h, w) or (t, h, w) of positive sizes, got {self.grid}")
        if self.prefix_tokens is not None and self.prefix_tokens < 0:
            raise ValueError(f"prefix_tokens must be >= 0, got {self.prefix_tokens}")


@dataclass(frozen=True)
class Layout:
    """How one output tensor maps to ``(B, K, *grid)``."""

    kind: Literal["channels_first", "channels_last", "tokens"]
    grid: tuple[int, ...]
    prefix: int = 0


@dataclass(frozen=True)
class ModelHints:
    """What a model says about its token layout (None / False: it says nothing)."""

    patch_grid: tuple[int, ...] | None = None
    prefix_tokens: int | None = None
    channels_last: bool = False


def model_hints(model: nn.Module, x: Tensor) -> ModelHints:
    """Patch grid, prefix-token count and channels-last declaration of ``model`` for input ``x``."""
    size = tuple(int(s) for s in x.shape[2:])
    grid: tuple[int, ...] | None = None
    prefix = getattr(model, "num_prefix_tokens", None)
    embed = getattr(model, "patch_embed", None)
    if len(size) == 2 and embed is not None:
        if callable(getattr(embed, "dynamic_feat_size", None)):
            grid = tuple(embed.dynamic_feat_size(size))
        elif getattr(embed, "grid_size", None) is not None:
            grid = tuple(embed.grid_size)
    import torchvision  # cheap: already imported by atcon.models and by every torchvision model

    if isinstance(model, torchvision.models.VisionTransformer) and len(size) == 2:
        grid = (size[0] // model.patch_size, size[1] // model.patch_size)
        prefix = 1
    channels_last = getattr(model, "output_fmt", None) == "NHWC" or isinstance(
        model, torchvision.models.SwinTransformer
    )
    return ModelHints(grid, int(prefix) if isinstance(prefix, int) else None, channels_last)


def _proportional(s: tuple[int, ...], size: tuple[int, ...]) -> bool:
    return len(s) == len(size) == 2 and s[0] * size[1] == s[1] * size[0]


def _infer_grid(n: int, size: tuple[int, ...], max_prefix: int = 16) -> tuple[tuple[int, ...], int] | None:
    """Fewest prefix tokens leaving an ``h x w`` grid of the input's aspect ratio: exactly first,
    then within 10% (floor division of a size that is not a multiple of the patch)."""
    if len(size) != 2:
        return None
    height, width = size
    for tolerance in (0.0, 0.1):
        for prefix in range(min(n, max_prefix + 1)):
            m = n - prefix
            root = math.sqrt(m * height / width)
            for h in sorted({math.floor(root), math.ceil(root)}):
                if h < 1 or m % h:
                    continue
                w = m // h
                if abs(height / h - width / w) <= tolerance * max(height / h, width / w):
                    return (h, w), prefix
    return None


def _token_grid(
    n: int, size: tuple[int, ...], hints: ModelHints, spec: TargetLayer
) -> tuple[tuple[int, ...], int] | None:
    """(grid, prefix) for ``n`` tokens: the override, else the model's grid, else inferred."""
    if spec.grid is not None:
        prefix = spec.prefix_tokens if spec.prefix_tokens is not None else n - math.prod(spec.grid)
        return spec.grid, prefix
    grid = hints.patch_grid
    if grid is not None and len(grid) == len(size):
        prefix = n - math.prod(grid)
        wanted = spec.prefix_tokens if spec.prefix_tokens is not None else hints.prefix_tokens
        if prefix >= 0 and wanted in (None, prefix):
            return grid, prefix
    if spec.prefix_tokens is not None:
        inferred = _infer_grid(n - spec.prefix_tokens, size, max_prefix=0)
        return None if inferred is None else (inferred[0], spec.prefix_tokens)
    return _infer_grid(n, size)


def read_layout(
    out: Tensor, x_shape: tuple[int, ...], hints: ModelHints, spec: TargetLayer | None, name: str
) -> Layout:
    """Decide how the output ``out`` of layer ``name`` reads as ``(B, K, *grid)``.

    Raises:
        ValueError: the output is not a feature map in any of the three layouts, or its tokens
            do not fit the requested grid.
    """
    spec = spec or TargetLayer()
    size = tuple(x_shape[2:])
    shape = tuple(out.shape)
    if out.ndim == len(x_shape):
        first, last = shape[2:], shape[1:-1]
        if spec.channels_last is not None:
            channels_last = spec.channels_last
        else:  # a declared NHWC model may still have NCHW layers (its patch-embedding convolution)
            channels_last = hints.channels_last and not (
                _proportional(first, size) and not _proportional(last, size)
            )
        return Layout("channels_last", last) if channels_last else Layout("channels_first", first)
    if out.ndim == 3 and len(x_shape) in (4, 5):
        n = shape[1]
        found = _token_grid(n, size, hints, spec)
        if found is None or found[1] < 0 or n != found[1] + math.prod(found[0]):
            raise ValueError(
                f"cannot read the output of target_layer {name!r}, shaped {shape}, as patch tokens"
                f"{'' if found is None else f' on a {found[0]} grid'}: pass "
                "atcon.attention.TargetLayer(layer, grid=(h, w), prefix_tokens=P) with the patch grid "
                "and the number of class/register tokens before the patches"
            )
        return Layout("tokens", tuple(found[0]), found[1])
    raise ValueError(
        f"target_layer {name!r} outputs shape {shape}, which is not a feature map: Grad-CAM needs "
        f"(B, C, *spatial), channels-last (B, *spatial, C) or tokens (B, N, D) for inputs shaped "
        f"{tuple(x_shape)}. Choose a convolutional stage or a transformer block's norm instead."
    )


def to_spatial(out: Tensor, layout: Layout) -> Tensor:
    """``out`` as ``(B, K, *grid)``: a view for channel layouts, a copy for tokens."""
    if layout.kind == "channels_first":
        return out
    if layout.kind == "channels_last":
        return out.movedim(-1, 1)
    patches = out[:, layout.prefix :]
    return patches.transpose(1, 2).reshape(out.shape[0], out.shape[2], *layout.grid)


def from_spatial(spatial: Tensor, out: Tensor, layout: Layout) -> Tensor:
    """Put ``spatial`` back in the layout of ``out`` (prefix tokens taken from ``out``), as a new tensor.

    The result never shares memory with ``spatial``, so an inplace op downstream cannot alter it.
    """
    if layout.kind == "channels_first":
        return spatial.clone()
    if layout.kind == "channels_last":
        return spatial.movedim(1, -1).clone()
    patches = spatial.flatten(2).transpose(1, 2)
    if layout.prefix == 0:
        return patches.clone(memory_format=torch.contiguous_format)
    return torch.cat([out[:, : layout.prefix], patches], dim=1)
