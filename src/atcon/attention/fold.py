"""Eval-mode BatchNorm folded into the preceding convolution, differentiably.

In eval mode a BatchNorm is an affine map per channel, so a convolution followed by it is one
convolution with rescaled weights:

    BN(conv(x; W, b)) = conv(x; W * s, (b - mu) * s + beta),   s = gamma / sqrt(var + eps)

with ``s`` broadcast over the output-channel axis of ``W``. Inside :func:`folded_batchnorm` each
such pair runs as that single convolution and the BatchNorm as the identity. The folded weights
are recomputed from the parameters at every forward, so gradients (and the second-order terms
of the consistency loss) still reach ``W``, ``b``, ``gamma`` and ``beta``; only the running
statistics, which eval mode treats as constants, carry none. The attention passes then launch
fewer kernels and save fewer activations for their three backward passes.

A pair is folded only when it is safe:

* the BatchNorm's input is exactly the convolution's output tensor, and no other operation
  consumes that tensor (found by one gradient-free probe forward that records tensor identities
  and every torch call, see :func:`find_conv_bn_pairs`);
* both modules are plain (``nn.Conv1d/2d/3d`` and ``BatchNorm1d/2d/3d`` / ``SyncBatchNorm``
  forwards, not overridden), the BatchNorm tracks running statistics, and neither module has
  been patched already;
* at each call, the BatchNorm is in eval mode and no hook could observe the difference (a
  forward hook on the convolution, such as a Grad-CAM capture of that very layer, a pre-hook on
  the BatchNorm, backward hooks, or global module hooks). Otherwise that call runs unfolded.

A training-mode BatchNorm is therefore never folded, even if the mode changes inside the block.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from atcon.attention.hooks import preserve_model, unwrap_model

_CONV_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)
_BN_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward)


def fold_conv_bn(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    gamma: Tensor | None = None,
    beta: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Weight and bias of the convolution equal to ``conv`` followed by an eval-mode BatchNorm.

    ``s = gamma / sqrt(running_var + eps)``; ``W' = W * s`` (per output channel) and
    ``b' = (b - running_mean) * s + beta``. Differentiable w.r.t. every argument.

    Args:
        weight: the convolution's weight ``(C_out, C_in / groups, *kernel)``.
        bias: its bias ``(C_out,)`` or None.
        running_mean, running_var: the BatchNorm's statistics ``(C_out,)``.
        eps: the BatchNorm's epsilon.
        gamma, beta: its affine parameters ``(C_out,)``, or None when it has none.

    Returns:
        ``(W', b')`` with the shapes of ``weight`` and ``(C_out,)``.
    """
    scale = torch.rsqrt(running_var + eps)
    if gamma is not None:
        scale = gamma * scale
    folded_w = weight * scale.reshape(-1, *(1,) * (weight.ndim - 1))
    shift = -running_mean * scale if bias is None else (bias - running_mean) * scale
    return folded_w, shift if beta is None else shift + beta


def _plain_conv(m: nn.Module) -> bool:
    return type(m).forward in _CONV_FORWARDS and "forward" not in vars(m)


def _plain_bn(m: nn.Module) -> bool:
    return (
        isinstance(m, _BatchNorm)
        and type(m).forward in _BN_FORWARDS
        and "forward" not in vars(m)
        and m.running_mean is not None
        and m.running_var is not None
    )


def _tensors(obj: object) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


@dataclass
class _Probe:
    """Tensor identities seen during the probe forward."""

    produced: dict[int, tuple[nn.Module, Tensor, int]] = field(default_factory=dict)
    uses: Counter[int] = field(default_factory=Counter)
    fed: list[tuple[nn.Module, int | None]] = field(default_factory=list)  # (bn, producing output id)


class _CountUses(TorchFunctionMode):
    """Count, for each watched tensor, the torch calls that take it and return a tensor.

    Metadata queries (``size``, ``dim``, ``shape``) return no tensor and do not count; the mode is
    off while ``func`` runs, so a module's internal calls count once, as the call that made them.
    """

    def __init__(self, probe: _Probe) -> None:
        super().__init__()
        self.probe = probe

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if any(True for _ in _tensors(out)):
            for t in _tensors((args, kwargs)):
                seen = self.probe.produced.get(id(t))
                if seen is not None and seen[1] is t:
                    self.probe.uses[id(t)] += 1
        return out


@dataclass(frozen=True)
class ConvBN:
    """A foldable pair: dotted names, and the size of one sample of the convolution's output."""

    conv: str
    bn: str
    out_numel: int


def _probe_pairs(model: nn.Module, x: Tensor) -> list[ConvBN]:
    probe = _Probe()
    names = {m: n for n, m in model.named_modules()}

    def conv_out(m: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, Tensor):
            probe.produced[id(out)] = (m, out, out._version)

    def bn_in(m: nn.Module, args: tuple[Any, ...]) -> None:
        t = args[0] if args else None
        seen = probe.produced.get(id(t)) if isinstance(t, Tensor) else None
        ok = seen is not None and seen[1] is t and seen[2] == t._version  # type: ignore[union-attr]
        probe.fed.append((m, id(t) if ok else None))

    convs = [m for m in model.modules() if _plain_conv(m)]
    bns = [m for m in model.modules() if _plain_bn(m)]
    handles = [m.register_forward_hook(conv_out) for m in convs]
    handles += [m.register_forward_pre_hook(bn_in) for m in bns]
    try:
        with preserve_model(model), torch.no_grad(), _CountUses(probe):
            model(x)
    finally:
        for h in handles:
            h.remove()

    # Every output of a folded conv feeds its BatchNorm and nothing else, and every input of that
    # BatchNorm is an output of that conv (covers modules called more than once).
    bns_of: dict[nn.Module, set[nn.Module]] = {}  # conv -> the BatchNorms its outputs fed
    sources: dict[nn.Module, set[nn.Module | None]] = {}  # BatchNorm -> convs (None: anything else)
    for bn, src in probe.fed:
        conv = probe.produced[src][0] if src is not None and probe.uses[src] == 1 else None
        sources.setdefault(bn, set()).add(conv)
        if conv is not None:
            bns_of.setdefault(conv, set()).add(bn)
    outputs = Counter(m for m, _, _ in probe.produced.values())
    fed = Counter(probe.produced[s][0] for _, s in probe.fed if s is not None and probe.uses[s] == 1)
    numel = {m: t[0].numel() for m, t, _ in probe.produced.values() if t.ndim}
    pairs = []
    for conv, fed_bns in bns_of.items():
        bn = next(iter(fed_bns))
        if len(fed_bns) == 1 and sources[bn] == {conv} and fed[conv] == outputs[conv]:
            pairs.append(ConvBN(names[conv], names[bn], numel[conv]))
    return pairs


# Pairs per model, keyed by the per-sample input shape, the module structure and the train/eval
# flags (control flow may depend on them); a changed key probes again.
_PAIRS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[tuple[int, ...], int], list[ConvBN]]] = (
    weakref.WeakKeyDictionary()
)


def find_conv_bn_pairs(model: nn.Module, x: Tensor) -> list[ConvBN]:
    """The (convolution, BatchNorm) pairs :func:`folded_batchnorm` may fold.

    Found with one gradient-free forward of the first two samples of ``x`` (model restored
    afterwards, BatchNorm statistics included) that records which tensor each convolution
    produced, which tensor each BatchNorm received, and every torch call that consumed a
    convolution's output. Cached per model, per-sample input shape, module structure and
    train/eval flags. A model whose probe forward fails gets no pairs (nothing is folded).

    Shape:
        x: ``(B, C, *spatial)``.
    """
    inner = unwrap_model(model)
    modules = list(inner.modules())
    key = (tuple(x.shape[1:]), hash(tuple((id(m), m.training) for m in modules)))
    per_model = _PAIRS.setdefault(inner, {})
    if key not in per_model:
        try:
            per_model[key] = _probe_pairs(inner, x[:2].detach())
        except Exception:
            per_model[key] = []  # the real forward reports whatever went wrong
    return per_model[key]


def _observed(conv: nn.Module, bn: nn.Module) -> bool:
    """Whether a hook would see the conv's own output or the BatchNorm's own input."""
    glob = nn.modules.module
    return bool(
        conv._forward_hooks
        or conv._backward_hooks
        or conv._backward_pre_hooks
        or bn._forward_pre_hooks
        or bn._backward_hooks
        or bn._backward_pre_hooks
        or getattr(glob, "_global_forward_hooks", None)
        or getattr(glob, "_global_forward_pre_hooks", None)
        or getattr(glob, "_global_backward_hooks", None)
        or getattr(glob, "_global_backward_pre_hooks", None)
    )


def _patch_pair(conv: Any, bn: Any) -> None:
    # One flag shared by the two forwards: the BatchNorm is the identity exactly when the conv's
    # last call (the one producing its input) was folded.
    folded = [False]
    conv_forward: Callable[[Tensor], Tensor] = conv.forward
    bn_forward: Callable[[Tensor], Tensor] = bn.forward

    def conv_then_bn(x: Tensor) -> Tensor:
        folded[0] = not bn.training and not _observed(conv, bn)
        if not folded[0]:
            return conv_forward(x)
        w, b = fold_conv_bn(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        return conv._conv_forward(x, w, b)

    def identity(x: Tensor) -> Tensor:
        return x if folded[0] and not bn.training else bn_forward(x)

    conv.forward = conv_then_bn
    bn.forward = identity


@contextlib.contextmanager
def folded_batchnorm(
    model: nn.Module, x: Tensor, *, enabled: bool = True, min_activation_ratio: float = 4.0
) -> Iterator[list[ConvBN]]:
    """Inside the block, run each safe (conv, eval-mode BatchNorm) pair as one folded convolution.

    Forward passes inside the block give the same outputs, and the same gradients w.r.t. every
    parameter and input, as without it, up to floating-point rounding (see the module
    docstring). Graphs built inside stay valid after the block. On exit, also on error, the
    modules get their own ``forward`` back; nothing else is changed (no parameter, buffer, hook or
    flag is touched).

    Folding trades work on activations (the BatchNorm's) for work on weights (rescaling them and
    differentiating the rescaling), so a pair is folded only where the batch's output of the
    convolution has at least ``min_activation_ratio`` times as many elements as its weight: at
    small batches and resolutions, the deep layers of a ResNet have more weights than
    activations, and folding them would cost more than it saves.

    Args:
        model: the network (DistributedDataParallel-wrapped allowed).
        x: an input like those about to be forwarded (its batch size sets which pairs pay; its
            first two samples are forwarded once per model and input shape to find the pairs).
        enabled: False makes the block a no-op (yields no pairs).
        min_activation_ratio: fold where ``B * out_numel >= min_activation_ratio * weight.numel()``;
            0 folds every safe pair.

    Yields:
        The folded pairs.
    """
    if not enabled:
        yield []
        return
    inner = unwrap_model(model)
    pairs = []
    for pair in find_conv_bn_pairs(inner, x):
        conv, bn = inner.get_submodule(pair.conv), inner.get_submodule(pair.bn)
        pays = x.shape[0] * pair.out_numel >= min_activation_ratio * conv.weight.numel()  # type: ignore[operator]
        if pays and _plain_conv(conv) and _plain_bn(bn):
            pairs.append(pair)
    patched: list[nn.Module] = []
    try:
        for pair in pairs:
            conv, bn = inner.get_submodule(pair.conv), inner.get_submodule(pair.bn)
            patched += [conv, bn]
            _patch_pair(conv, bn)
        yield pairs
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)
