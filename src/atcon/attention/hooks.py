"""Scoped access to a model's internals: layer lookup, feature capture, state restoration.

Every hook registered here lives only inside a ``with`` block and is removed in ``finally``.
Only forward hooks are used: module full-backward hooks break on inplace ReLUs and on residual
``+=``, and gradients are taken with :func:`torch.autograd.grad` instead, which never touches
``param.grad``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

LayerSpec = str | nn.Module | None

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


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Find ``layer`` (a dotted name such as ``"layer4"`` or a submodule) inside ``model``.

    Returns:
        ``(dotted_name, module)``.

    Raises:
        ValueError: the name does not exist, or the module is not part of ``model``.
    """
    inner = unwrap_model(model)
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


def _is_feature_map(module: nn.Module, output: object, batch: int, ndim: int) -> bool:
    if not isinstance(output, Tensor) or isinstance(module, _NOT_FEATURES):
        return False
    return output.ndim == ndim and output.shape[0] == batch and output.shape[2:].numel() > 1


@dataclass
class Capture:
    """What :func:`capture_features` saw during the forward pass inside its ``with`` block."""

    name: str
    output: Tensor | None = None

    def features(self) -> tuple[str, Tensor]:
        """Return ``(layer_name, feature_map)``; raise when the layer did not run."""
        if self.output is None:
            raise ValueError(f"target_layer {self.name!r} did not run during the forward pass")
        return self.name, self.output


def _discover(model: nn.Module, x: Tensor) -> str:
    found: list[str] = []
    batch, ndim = x.shape[0], x.ndim

    def make_probe(n: str):
        def probe(m: nn.Module, _inp: object, out: object) -> None:
            if _is_feature_map(m, out, batch, ndim):
                found.append(n)

        return probe

    handles = [m.register_forward_hook(make_probe(n)) for n, m in model.named_modules() if m is not model]
    try:
        with preserve_model(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise ValueError(
            "no target layer found: no module produced a spatial feature map (an output shaped "
            "(B, C, *spatial) like the input, with more than one position, that is not a pooling, "
            "dropout, flatten or identity layer). Pass target_layer explicitly, e.g. 'layer4'."
        )
    return found[-1]


# Discovered names per model, keyed by the input's per-sample shape (a small input can shrink the
# last maps to 1x1) and the model's module structure (a replaced submodule invalidates the entry).
_DISCOVERED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[tuple[int, ...], int], str]] = (
    weakref.WeakKeyDictionary()
)


def find_target_layer(model: nn.Module, x: Tensor) -> str:
    """Return the dotted name of the layer Grad-CAM uses when ``target_layer=None``.

    The rule: the **last module, in order of completion, whose output is a tensor shaped like the
    input's rank ``(B, C, *spatial)`` with more than one spatial position, and that is not a
    pooling, dropout, flatten or identity module**. A container completes after its children, so
    the outermost module producing the final map wins: torchvision ResNets -> ``layer4``,
    ``inception_v3`` -> ``Mixed_7c``, ``r3d_18`` -> ``layer4``, VGG / DenseNet / MobileNet ->
    ``features``. Found with one gradient-free forward pass of the first sample of ``x``; the
    answer is cached per model and per-sample input shape until the model's modules change.

    Shape:
        x: ``(B, C, *spatial)``.

    Raises:
        ValueError: no module qualifies.
    """
    inner = unwrap_model(model)
    key = (tuple(x.shape[1:]), hash(tuple(id(m) for m in inner.modules())))
    per_model = _DISCOVERED.setdefault(inner, {})
    if key not in per_model:
        per_model[key] = _discover(inner, x[:1].detach())
    return per_model[key]


@contextlib.contextmanager
def capture_features(model: nn.Module, layer: LayerSpec, x: Tensor) -> Iterator[Capture]:
    """Record the output of ``layer`` during forward passes run inside the block.

    The output is replaced downstream by a clone so that a later inplace op (DenseNet's
    ``F.relu(features, inplace=True)``) cannot alter the captured values; the gradient still flows
    through it. When the module runs several times, the last call is kept.

    Args:
        model: the network (DDP-wrapped allowed).
        layer: dotted name, submodule, or None for :func:`find_target_layer`'s choice.
        x: the input about to be forwarded (used only when discovering the layer).
    """
    inner = unwrap_model(model)
    name, module = resolve_layer(inner, find_target_layer(inner, x) if layer is None else layer)
    cap = Capture(name)

    def keep(_m: nn.Module, _inp: object, out: object) -> object:
        if not isinstance(out, Tensor):
            raise ValueError(f"target_layer {name!r} returned {type(out).__name__}, not a tensor")
        cap.output = out
        return out.clone()

    handle = module.register_forward_hook(keep)
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
