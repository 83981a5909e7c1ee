"""The attention-consistency loss (paper Sec. 3.3, Algorithm 1, and the Table 4 ablations).

Default path (``resolution="gb_mask"``, ``similarity="pearson"``), batched:

1. one forward pass of ``x`` (guided ReLUs armed); targets = top-1 class per sample (or given);
2. ``A1`` = signed Grad-CAM at the target layer, and ``S = sum_c |GB(x)|`` from the same pass;
3. ``P`` = soft mask of ``S`` (Eq. 6), broadcast over channels (and frames' channels);
4. second forward pass of ``P * x``; ``A2`` = Grad-CAM for the same target classes;
5. loss = ``-mean_b Pearson(vec A1_b, vec A2_b)``.

Gradients flow through ``A1``, ``A2`` and the mask ``P`` (the Guided Backprop pass is taken with
``create_graph=True``); ``detach_mask=True`` stops them at ``P``, which is cheaper. All inner
gradients come from :func:`torch.autograd.grad`; the caller makes the one ordinary
``loss.backward()``, which is what DistributedDataParallel supports (the loss of a wrapped model
depends by an exact zero on every parameter, :func:`touch_if_distributed`).

The loss is meant for models whose BatchNorm layers run in eval mode (as when fine-tuning with
frozen normalisation): in training mode they couple the samples of a batch, so one sample's maps
depend on the others. A warning is issued once when that happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.attention.convgrad import lean_conv_grads
from atcon.attention.fold import folded_batchnorm
from atcon.attention.guided import twice_differentiable
from atcon.attention.hooks import LayerSpec, training_norm_layers
from atcon.attention.maps import Targets, forward_pass, gradcam_from, guided_backprop, select_targets
from atcon.attention.ops import upsample_to_input
from atcon.consistency.masking import (
    MASK_SCALES,
    MaskScale,
    random_smooth_saliency,
    saliency,
    sobel_saliency,
    soft_mask,
)
from atcon.consistency.similarity import SIMILARITIES, SimilarityName, dissimilarity, ssim_window

Resolution = Literal["gb_mask", "gradcam_mask", "gradcam_upsample", "gb_pool"]
RESOLUTIONS: tuple[Resolution, ...] = get_args(Resolution)
MaskSource = Literal["guided_backprop", "random_network", "sobel", "random_smooth"]
MASK_SOURCES: tuple[MaskSource, ...] = get_args(MaskSource)


@dataclass(frozen=True)
class ConsistencyConfig:
    """How the two attention maps are brought to a common resolution and compared.

    Each field is also a setting of :class:`~atcon.train.config.TrainConfig` (which inherits
    them), so a new consistency option is one field here, its documentation and its use.

    Attributes:
        resolution: How the two attention maps are brought together: gb_mask (Algorithm 1:
            Grad-CAM of x vs Grad-CAM of the masked input P * x, P from Guided Backprop),
            gradcam_mask (P from Grad-CAM upsampled to the input, then S(x) vs S(P * x)),
            gradcam_upsample (Grad-CAM upsampled to the input vs S) or gb_pool (S max-pooled
            to the Grad-CAM resolution vs Grad-CAM).
        similarity: How the two maps are compared: pearson (loss -r), cross_correlation (loss
            -cc) or ssim (loss 1 - SSIM); see atcon.consistency.similarity.
        mask_scale: Scale of the soft mask of Eq. 6: std, variance (the paper's wording) or
            none (the published reference code); see atcon.consistency.masking.
        mask_center: Mask threshold, in standard deviations above the saliency's mean (the
            reference code: 0.5 with mask_scale none and mask_sharpness 8).
        mask_sharpness: Slope of the mask's sigmoid (must be > 0).
        detach_mask: Stop gradients at the mask (cheaper; the method lets them flow).
        mask_source: Where the mask's saliency comes from (gb_mask only): guided_backprop (the
            method), or the controls random_network (Guided Backprop of a randomly
            re-initialised copy of the network, passed as mask_model), sobel (edge magnitude
            of the input) and random_smooth (a random smooth map). The controls' masks carry
            no gradient.
        fold_norm: Speed: fold eval-mode BatchNorm into the convolution before it in the
            consistency passes (atcon.attention.fold; same loss and gradients up to rounding).
        lean_conv_grad: Speed: convolutions with a direct second-order backward in the
            consistency passes (atcon.attention.convgrad; same loss and gradients up to
            rounding).
        lean_grouped_conv: Speed: the same lean convolutions for grouped and depthwise
            convolutions only (groups > 1), whatever lean_conv_grad says: on by default, since
            PyTorch's own double backward runs one convolution per group there (same loss and
            gradients up to rounding).
    """

    resolution: Resolution = "gb_mask"
    similarity: SimilarityName = "pearson"
    mask_scale: MaskScale = "std"
    mask_center: float = 0.0
    mask_sharpness: float = 1.0
    detach_mask: bool = False
    mask_source: MaskSource = "guided_backprop"
    fold_norm: bool = True
    lean_conv_grad: bool = False
    lean_grouped_conv: bool = True

    def __post_init__(self) -> None:
        for field, allowed in (
            ("resolution", RESOLUTIONS),
            ("mask_source", MASK_SOURCES),
            ("similarity", SIMILARITIES),
            ("mask_scale", MASK_SCALES),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        for name in ("mask_center", "mask_sharpness"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not self.mask_sharpness > 0:
            raise ValueError(f"mask_sharpness must be > 0, got {self.mask_sharpness}")
        if self.mask_source != "guided_backprop" and self.resolution != "gb_mask":
            raise ValueError(
                f"mask_source={self.mask_source!r} replaces the Guided Backprop mask of resolution='gb_mask'; "
                f"resolution {self.resolution!r} has no such mask"
            )


@dataclass
class ConsistencyResult:
    """Everything one loss evaluation produced (all tensors keep their graph).

    Attributes:
        loss: per-sample loss ``(B,)``; lower is more consistent.
        first, second: the two maps compared, ``(B, *spatial)``.
        mask: the input mask ``P`` ``(B, *input spatial)``, or None when the variant uses none.
        targets: ``(B,)`` target classes.
        logits: ``(B, K)`` logits of the first pass.
        layer: the Grad-CAM layer's dotted name.
        gradcam: the signed Grad-CAM of ``x`` for the targets ``(B, *layer spatial)`` (``A1``).
        saliency: ``S = sum_c |GB(x)|`` ``(B, *input spatial)``, or None when the mask came from a
            control source.
    """

    loss: Tensor
    first: Tensor
    second: Tensor
    mask: Tensor | None
    targets: Tensor
    logits: Tensor
    layer: str
    gradcam: Tensor | None = None
    saliency: Tensor | None = None


_warned_train_bn = False


def _warn_if_training_norm(model: nn.Module) -> None:
    global _warned_train_bn
    if _warned_train_bn:
        return
    names = training_norm_layers(model)
    if names:
        _warned_train_bn = True
        warnings.warn(
            f"{len(names)} BatchNorm layers (e.g. {names[0]!r}) are in training mode: they couple the "
            "samples of a batch, so each sample's attention maps depend on the others. The "
            "consistency loss is meant for eval-mode normalisation: compute it inside "
            "`with atcon.train.eval_mode(model):`, as atcon's trainer does.",
            UserWarning,
            stacklevel=3,
        )


def _mask_input(x: Tensor, mask: Tensor) -> Tensor:
    # P has one value per position; broadcast it over channels.
    return mask.unsqueeze(1).to(x.dtype) * x


def _pool_to(s: Tensor, size: tuple[int, ...]) -> Tensor:
    pool = F.adaptive_max_pool2d if len(size) == 2 else F.adaptive_max_pool3d
    return pool(s.unsqueeze(1), size).squeeze(1)


@contextlib.contextmanager
def _pass(model: nn.Module, x: Tensor, config: ConsistencyConfig, name: str) -> Iterator[None]:
    """One pass of the loss: the speed levers on, and a named range for profilers."""
    with (
        torch.profiler.record_function(f"atcon.{name}"),
        folded_batchnorm(model, x, enabled=config.fold_norm),
        lean_conv_grads(config.lean_conv_grad, grouped=config.lean_grouped_conv),
    ):
        yield


@twice_differentiable()  # both passes are differentiated twice: attention on the math kernel
def attention_consistency(
    model: nn.Module,
    x: Tensor,
    config: ConsistencyConfig = ConsistencyConfig(),
    *,
    target_layer: LayerSpec = None,
    targets: Targets = None,
    mask_model: nn.Module | None = None,
) -> ConsistencyResult:
    """Evaluate the attention-consistency loss for a batch (functional core of the loss module).

    Args:
        model: classifier with rectifying activations (ReLU, SiLU, GELU, ...), returning
            ``(B, K)`` logits; BatchNorm in eval mode.
        x: ``(B, C, H, W)`` images or ``(B, C, T, H, W)`` clips; needs no labels.
        config: the variant, see :class:`ConsistencyConfig`.
        target_layer: Grad-CAM layer (name, module, or None to discover it).
        targets: None (top-1 per sample, the paper's choice), int, or ``(B,)``.
        mask_model: the network whose Guided Backprop makes the mask when
            ``config.mask_source == "random_network"`` (see :func:`atcon.models.randomized_copy`).

    Returns:
        A :class:`ConsistencyResult`; ``result.loss`` is ``(B,)`` and differentiable w.r.t. the
        model's parameters.
    """
    _warn_if_training_norm(model)
    res = config.resolution
    source = config.mask_source
    if (source == "random_network") != (mask_model is not None):
        raise ValueError(
            "mask_source='random_network' needs mask_model (e.g. atcon.models.randomized_copy(model)); "
            "other mask sources take none"
        )
    mask_grad = not config.detach_mask and source == "guided_backprop"
    with _pass(model, x, config, "first_pass"), forward_pass(model, x, target_layer, guided=True) as fp:
        t = select_targets(fp.logits, targets)
        layer = fp.layer
        again = layer if target_layer is None else target_layer  # keeps a TargetLayer's reading
        (gf,) = fp.gradients(t, (fp.features,), guided=False, create_graph=True, retain_graph=True)
        a1 = gradcam_from(fp.features, gf)
        if config.similarity == "ssim":
            ssim_window(tuple(a1.shape[1:]) if res in ("gb_mask", "gb_pool") else tuple(x.shape[2:]))
        gb_graph = mask_grad or res != "gb_mask"
        s1 = None
        if source == "guided_backprop":
            (gx,) = fp.gradients(t, (fp.x,), guided=True, create_graph=gb_graph, retain_graph=True)
            s1 = saliency(gx)
        logits = fp.logits

    def make_mask(m: Tensor) -> Tensor:
        p = soft_mask(m, scale=config.mask_scale, center=config.mask_center, sharpness=config.mask_sharpness)
        return p if mask_grad else p.detach()

    mask: Tensor | None = None
    if res == "gb_mask":
        mask = make_mask(s1 if s1 is not None else _control_saliency(source, x, t, mask_model))
        xm = _mask_input(x, mask)
        with _pass(model, xm, config, "second_pass"), forward_pass(model, xm, again, guided=False) as fp2:
            (gf2,) = fp2.gradients(t, (fp2.features,), guided=False, create_graph=True)
            first, second = a1, gradcam_from(fp2.features, gf2)
    elif res == "gradcam_mask":
        assert s1 is not None
        mask = make_mask(upsample_to_input(a1, x))
        xm = _mask_input(x, mask)
        with _pass(model, xm, config, "second_pass"), forward_pass(model, xm, again, guided=True) as fp2:
            (gx2,) = fp2.gradients(t, (fp2.x,), guided=True, create_graph=True)
            first, second = s1, saliency(gx2)
    elif res == "gradcam_upsample":
        assert s1 is not None
        first, second = upsample_to_input(a1, x), s1
    else:  # gb_pool
        assert s1 is not None
        first, second = a1, _pool_to(s1, tuple(a1.shape[1:]))
    loss = dissimilarity(config.similarity, first, second)
    return ConsistencyResult(loss, first, second, mask, t, logits, layer, a1, s1)


def touch_if_distributed(loss: Tensor, model: nn.Module) -> Tensor:
    """``loss`` plus an exact zero that depends on every trainable parameter, when ``model`` is
    wrapped in ``DistributedDataParallel``.

    The reducer expects a gradient for every parameter in every step; the consistency loss never
    depends on the output bias (Grad-CAM's gradients do not see it), so without this a user's
    loop fails at its second step unless DDP is built with ``find_unused_parameters=True``.
    """
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return loss
    params = [p for p in model.module.parameters() if p.requires_grad]
    return loss + sum((p.sum() * 0.0 for p in params), loss.new_zeros(()))


def _control_saliency(source: str, x: Tensor, targets: Tensor, mask_model: nn.Module | None) -> Tensor:
    """The saliency of a control mask source (no gradient reaches the trained model)."""
    x = x.detach()
    if source == "sobel":
        return sobel_saliency(x)
    if source == "random_smooth":
        return random_smooth_saliency(x)
    assert mask_model is not None
    # Guided Backprop of the random network for the trained network's target classes.
    return saliency(guided_backprop(mask_model, x, targets=targets)).detach()


def finite_samples(x: Tensor) -> tuple[Tensor, Tensor]:
    """The batch with every sample that holds a NaN or infinite value replaced by zeros, and the
    ``(B,)`` mask of the samples kept, without a host sync (training steps stay asynchronous).

    Raises:
        ValueError: an empty batch (no sample to compute a loss from).
    """
    if x.shape[0] == 0:
        raise ValueError(f"empty batch {tuple(x.shape)}: the consistency loss needs at least one sample")
    keep = torch.isfinite(x).flatten(1).all(1)
    x = torch.where(keep.view(-1, *[1] * (x.ndim - 1)), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x, keep


def mean_of_kept(loss: Tensor, keep: Tensor) -> Tensor:
    """The mean of the per-sample ``loss`` over the samples :func:`finite_samples` kept (0 when
    none); a left-out sample's value, whatever it is, reaches neither the mean nor the gradient."""
    return torch.where(keep, loss, torch.zeros_like(loss)).sum() / keep.sum().clamp(min=1)


class AttentionConsistencyLoss(nn.Module):
    """Unsupervised attention-consistency loss between Grad-CAM and Guided Backprop.

    ``loss = loss_fn(x)`` is a scalar (batch mean; lower is more consistent) differentiable
    w.r.t. the model's parameters; no labels are needed. The default is the paper's Algorithm 1
    (``resolution="gb_mask"``, ``similarity="pearson"``), in which case the loss is
    ``-mean_b Pearson(A1_b, A2_b)`` in ``[-1, 1]``. See :class:`ConsistencyConfig` for the
    variants and :func:`attention_consistency` for the steps.

    The model is referenced, not registered as a submodule: the loss holds no parameters and
    ``loss_fn.train()``/``eval()`` never change the model's mode.

    Args:
        model: the classifier to fine-tune (plain or DistributedDataParallel-wrapped).
        target_layer: Grad-CAM layer (dotted name, module, or None to discover).
        config: the variant (default: ``ConsistencyConfig()``, Algorithm 1).
        mask_model: the network whose Guided Backprop makes the mask, needed by (and only by)
            ``mask_source="random_network"``; referenced like ``model``.
        reduction: ``"mean"`` (scalar) or ``"none"`` (``(B,)``).
        **overrides: fields of :class:`ConsistencyConfig` replaced in ``config``, a shorthand:
            ``AttentionConsistencyLoss(model, resolution="gradcam_mask")``.

    Raises:
        TypeError: an override that is not a :class:`ConsistencyConfig` field.
        ValueError: an invalid config, or ``mask_model`` given to (or missing from) a config
            that does not use (or needs) it.

    Shape:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``; targets: optional ``(B,)``.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        *,
        config: ConsistencyConfig | None = None,
        mask_model: nn.Module | None = None,
        reduction: Literal["mean", "none"] = "mean",
        **overrides: Any,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        known = {f.name for f in dataclasses.fields(ConsistencyConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"AttentionConsistencyLoss got unknown option(s) {', '.join(unknown)}; "
                f"ConsistencyConfig fields are {', '.join(sorted(known))}"
            )
        self.config = dataclasses.replace(config or ConsistencyConfig(), **overrides)
        if (self.config.mask_source == "random_network") != (mask_model is not None):
            raise ValueError(
                "mask_source='random_network' needs mask_model (e.g. atcon.models.randomized_copy(model)); "
                "other mask sources take none"
            )
        # Plain attributes, not submodules: see the class docstring.
        self.__dict__["model"] = model
        self.__dict__["mask_model"] = mask_model
        self.__dict__["target_layer"] = target_layer
        self.reduction = reduction

    model: nn.Module
    mask_model: nn.Module | None
    target_layer: LayerSpec

    def forward(self, x: Tensor, targets: Targets = None) -> Tensor:
        """Return the loss for ``x`` (scalar for ``reduction="mean"``, else ``(B,)``).

        Samples holding a NaN or infinite value are left out (:func:`finite_samples`): their
        loss is 0 and they add no gradient; the mean is over the other samples (0 when none).

        Raises:
            ValueError: an empty batch.
        """
        x, keep = finite_samples(x)
        out = attention_consistency(
            self.model,
            x,
            self.config,
            target_layer=self.target_layer,
            targets=targets,
            mask_model=self.mask_model,
        )
        if self.reduction == "mean":
            loss = mean_of_kept(out.loss, keep)
        else:
            loss = torch.where(keep, out.loss, torch.zeros_like(out.loss))
        return touch_if_distributed(loss, self.model)

    def extra_repr(self) -> str:
        return f"target_layer={self.target_layer!r}, {self.config}, reduction={self.reduction!r}"
