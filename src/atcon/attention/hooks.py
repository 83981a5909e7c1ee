"""Scoped access to a model's internals: layer lookup, feature capture, state restoration.

Every hook registered here lives only inside a ``with`` block and is removed in ``finally``.
Only forward hooks are used: module full-backward hooks break on inplace ReLUs and on residual
``+=``, and gradients are taken with :func:`torch.autograd.grad` instead, which never touches
``param.grad``.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from atcon.attention.tokens import (
    Layout,
    ModelHints,
    TargetLayer,
    from_spatial,
    model_hints,
    read_layout,
    to_spatial,
)

LayerSpec = str | nn.Module | TargetLayer | None

# Modules whose output is never the "feature map" Grad-CAM wants, even when it is spatial:
# pooling (global or not: VGG's AdaptiveAvgPool2d((7, 7)) comes after ``features``), dropout
# (same map, rescaled) and reshapes.
_NOT_FEATURES: tuple[type[nn.Module], ...] = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Flatten,
    nn.Identity,
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the user's network inside a ``DistributedDataParallel`` wrapper (else ``model``).

    Raises:
        TypeError: for ``nn.DataParallel``, whose replicas would each run a separate
            ``autograd.grad`` on a slice of the batch and whose hooks fire on replicas.
    """
    if isinstance(model, nn.DataParallel):
        raise TypeError(
            "nn.DataParallel is not supported: its per-device replicas break the hooks and the "
            "second-order gradients of attention maps. Use DistributedDataParallel (torchrun) "
            "or a single device."
        )
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def resolve_layer(model: nn.Module, layer: str | nn.Module | TargetLayer) -> tuple[str, nn.Module]:
    """Find ``layer`` (a dotted name such as ``"layer4"``, a submodule or a :class:`TargetLayer`) in ``model``.

    Returns:
        ``(dotted_name, module)``.

    Raises:
        ValueError: the name does not exist, or the module is not part of ``model``.
    """
    inner = unwrap_model(model)
    if isinstance(layer, TargetLayer):
        if layer.layer is None:
            raise ValueError("TargetLayer(layer=None) names no layer; resolve it with find_target_layer")
        layer = layer.layer
    if isinstance(layer, str):
        name = layer.removeprefix("module.") if inner is not model else layer
        try:
            return name, inner.get_submodule(name)
        except AttributeError:
            children = ", ".join(n for n, _ in inner.named_children()) or "(none)"
            raise ValueError(
                f"target_layer {layer!r} does not exist in {type(inner).__name__}; "
                f"top-level children are: {children}"
            ) from None
    for name, module in inner.named_modules():
        if module is layer:
            return name, module
    raise ValueError(f"target_layer {type(layer).__name__} is not a submodule of {type(inner).__name__}")


def _candidate(
    module: nn.Module, output: object, x_shape: tuple[int, ...], hints: ModelHints, name: str
) -> Layout | None:
    """The layout of a module's output if it is a feature map with more than one position."""
    if not isinstance(output, Tensor) or isinstance(module, _NOT_FEATURES) or output.shape[0] != x_shape[0]:
        return None
    try:
        layout = read_layout(output, x_shape, hints, None, name)
    except ValueError:
        return None
    return layout if math.prod(layout.grid) > 1 else None


@dataclass
class Capture:
    """What :func:`capture_features` saw during the forward pass inside its ``with`` block.

    Attributes:
        name: the layer's dotted name.
        output: the layer's output read as ``(B, K, *grid)`` (see :mod:`atcon.attention.tokens`).
        layout: how the raw output was read.
    """

    name: str
    output: Tensor | None = None
    layout: Layout | None = None

    def features(self) -> tuple[str, Tensor]:
        """Return ``(layer_name, feature_map)``; raise when the layer did not run."""
        if self.output is None:
            raise ValueError(f"target_layer {self.name!r} did not run during the forward pass")
        return self.name, self.output


def _family_default(model: nn.Module) -> str | None:
    """The default layer of class-token Vision Transformers, where discovery would be wrong.

    Their last block's output reaches the head only through the class token: its patch tokens
    get exactly zero gradient. The last block's first norm (the tokens entering the last
    attention) is the last place where every patch token still reaches the class score.
    """
    import torchvision

    if isinstance(model, torchvision.models.VisionTransformer):
        layers = list(model.encoder.layers.named_children())
        return f"encoder.layers.{layers[-1][0]}.ln_1" if layers else None
    blocks = getattr(model, "blocks", None)
    if (
        getattr(model, "patch_embed", None) is not None
        and isinstance(blocks, nn.Sequential | nn.ModuleList)
        and len(blocks) > 0
        and isinstance(getattr(blocks[-1], "norm1", None), nn.Module)
    ):
        return f"blocks.{len(blocks) - 1}.norm1"
    return None


def _discover(model: nn.Module, x: Tensor) -> str:
    found: list[tuple[str, Tensor, Layout]] = []
    shape, hints = tuple(x.shape), model_hints(model, x)

    def make_probe(n: str):
        def probe(m: nn.Module, _inp: object, out: object) -> None:
            layout = _candidate(m, out, shape, hints, n)
            if layout is not None:
                found.append((n, out, layout))  # type: ignore[arg-type]

        return probe

    handles = [m.register_forward_hook(make_probe(n)) for n, m in model.named_modules() if m is not model]
    try:
        with preserve_model(model), eval_mode(model), torch.enable_grad():
            output = model(x.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise ValueError(
            "no target layer found: no module produced a feature map (an output shaped (B, C, *spatial) "
            "like the input, (B, H, W, C) on a channels-last model, or tokens (B, N, D), with more "
            "than one position, that is not a pooling, dropout, flatten or identity layer). Pass "
            "target_layer explicitly, e.g. 'layer4'."
        )
    reached = _reached(output, found)
    return next((n for (n, _, _), r in zip(reversed(found), reversed(reached)) if r), found[-1][0])


def _reached(output: object, found: list[tuple[str, Tensor, Layout]]) -> list[bool]:
    """Whether the top-1 score of the first sample has a non-zero gradient at some position of each map."""
    logits = getattr(output, "logits", output)
    outs = [t for _, t, _ in found]
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.requires_grad:
        return [True] * len(found)
    try:
        grads = torch.autograd.grad(logits[0].max(), outs, allow_unused=True)
    except RuntimeError:  # a map altered in a way autograd cannot go back through: skip the check
        return [True] * len(found)
    return [
        g is not None and bool(to_spatial(g, layout).ne(0).any()) for g, (_, _, layout) in zip(grads, found)
    ]


# Discovered names per model, keyed by the input's per-sample shape (a small input can shrink the
# last maps to 1x1) and the model's module structure (a replaced submodule invalidates the entry).
_DISCOVERED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[tuple[int, ...], int], str]] = (
    weakref.WeakKeyDictionary()
)


def find_target_layer(model: nn.Module, x: Tensor) -> str:
    """Return the dotted name of the layer Grad-CAM uses when ``target_layer=None``.

    * **Class-token Vision Transformers** -- torchvision ``VisionTransformer``, and timm models
      with a ``patch_embed`` and ``blocks`` whose blocks have a ``norm1`` (``vit_*``, ``deit_*``,
      ``eva*``, ``beit*``...): the last block's first norm, ``blocks.{L-1}.norm1`` /
      ``encoder.layers.encoder_layer_{L-1}.ln_1``. The last block's output would be wrong: past
      the last attention only the class token reaches the head, so its patch tokens get exactly
      zero gradient.
    * **Everything else**: the **last module, in order of completion, whose output is a feature
      map -- ``(B, C, *spatial)`` like the input, ``(B, H, W, C)`` on a channels-last model,
      or tokens ``(B, N, D)`` -- with more than one position, that is not a pooling, dropout,
      flatten or identity module, and at which the top-1 class score has a non-zero gradient**.
      A container completes after its children, so the outermost module producing the final map
      wins: torchvision ResNets -> ``layer4``, ``inception_v3`` -> ``Mixed_7c``, ``r3d_18`` ->
      ``layer4``, VGG / DenseNet / MobileNet -> ``features``; timm EfficientNets -> ``bn2``,
      ConvNeXts and MobileNetV3 -> ``stages`` / ``blocks``, Swin -> ``norm`` (channels-last).

    Found with one forward and backward pass of the first sample of ``x`` in eval mode (the model
    is left as found); the answer is cached per model and per-sample input shape until the
    model's modules change.

    Shape:
        x: ``(B, C, *spatial)``.

    Raises:
        ValueError: no module qualifies.
    """
    inner = unwrap_model(model)
    key = (tuple(x.shape[1:]), hash(tuple(id(m) for m in inner.modules())))
    per_model = _DISCOVERED.setdefault(inner, {})
    if key not in per_model:
        per_model[key] = _family_default(inner) or _discover(inner, x[:1].detach())
    return per_model[key]


@dataclass(frozen=True)
class FeatureReader:
    """Reads one layer's outputs as feature maps ``(B, K, *grid)`` (see :mod:`atcon.attention.tokens`).

    For code with its own forward hook on the Grad-CAM layer::

        reader = feature_reader(model, layer, x)
        def hook(module, inputs, out):
            features, layout = reader.read(out)   # (B, K, *grid), differentiable
            ...                                   # keep features (or a leaf made from it)
            return reader.rebuild(features, out, layout)   # what the rest of the network sees

    Attributes:
        name: the layer's dotted name.
        module: the layer.
    """

    name: str
    module: nn.Module
    x_shape: tuple[int, ...]
    hints: ModelHints
    spec: TargetLayer | None

    def read(self, out: object) -> tuple[Tensor, Layout]:
        """``(feature_map, layout)`` of one output; raises ``ValueError`` when it is not a feature map."""
        if not isinstance(out, Tensor):
            raise ValueError(f"target_layer {self.name!r} returned {type(out).__name__}, not a tensor")
        layout = read_layout(out, self.x_shape, self.hints, self.spec, self.name)
        return to_spatial(out, layout), layout

    @staticmethod
    def rebuild(features: Tensor, out: Tensor, layout: Layout) -> Tensor:
        """``features`` in the layout of ``out``, as a new tensor that depends on ``features``."""
        return from_spatial(features, out, layout)


def feature_reader(model: nn.Module, layer: LayerSpec, x: Tensor) -> FeatureReader:
    """Resolve ``layer`` (None: :func:`find_target_layer`) and how its outputs read for input ``x``."""
    inner = unwrap_model(model)
    spec = layer if isinstance(layer, TargetLayer) else None
    chosen = spec.layer if spec is not None else layer
    name, module = resolve_layer(inner, find_target_layer(inner, x) if chosen is None else chosen)
    return FeatureReader(name, module, tuple(x.shape), model_hints(inner, x), spec)


@contextlib.contextmanager
def capture_features(model: nn.Module, layer: LayerSpec, x: Tensor) -> Iterator[Capture]:
    """Record the output of ``layer`` during forward passes run inside the block.

    The output is read as a feature map ``(B, K, *grid)`` (tokens and channels-last maps are
    rearranged, see :mod:`atcon.attention.tokens`) and that map, not the raw output, feeds the
    rest of the network: the gradient w.r.t. ``Capture.output`` is the Grad-CAM gradient, and a
    later inplace op (DenseNet's ``F.relu(features, inplace=True)``) cannot alter the captured
    values. When the module runs several times, the last call is kept.

    Args:
        model: the network (DDP-wrapped allowed).
        layer: dotted name, submodule, :class:`~atcon.attention.TargetLayer`, or None for
            :func:`find_target_layer`'s choice.
        x: the input about to be forwarded (used to discover the layer and read its grid).

    Raises:
        ValueError: (during the forward) the layer's output is not a feature map.
    """
    reader = feature_reader(model, layer, x)
    cap = Capture(reader.name)

    def keep(_m: nn.Module, _inp: object, out: object) -> object:
        cap.output, cap.layout = reader.read(out)
        return reader.rebuild(cap.output, out, cap.layout)  # type: ignore[arg-type]

    handle = reader.module.register_forward_hook(keep)
    try:
        yield cap
    finally:
        handle.remove()


@contextlib.contextmanager
def preserve_model(model: nn.Module) -> Iterator[None]:
    """Restore train/eval flags, ``requires_grad`` and BatchNorm statistics on exit, even on error.

    BatchNorm layers in training mode update their running statistics on every forward; an
    attention map must not have that side effect, so their buffers are snapshotted and put back.
    """
    inner = unwrap_model(model)
    modes = [(m, m.training) for m in inner.modules()]
    flags = [(p, p.requires_grad) for p in inner.parameters()]
    stats = [
        (buf, buf.detach().clone())
        for m in inner.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
        with torch.no_grad():
            for buf, saved in stats:
                buf.copy_(saved)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Whole model in eval mode inside the block (frozen normalisation, no dropout); restore on exit.

    Each module's own flag is restored, so a model that mixes modes comes back as it was.
    """
    modes = [(m, m.training) for m in unwrap_model(model).modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was


def training_norm_layers(model: nn.Module) -> list[str]:
    """Names of BatchNorm layers in training mode (they couple the samples of a batch)."""
    return [n for n, m in unwrap_model(model).named_modules() if isinstance(m, _BatchNorm) and m.training]
