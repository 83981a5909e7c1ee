"""Building classifiers by name: the curated networks, torchvision and timm models, weight files.

See :mod:`atcon.models` for the names and the accepted weights.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from atcon.data.transforms import IMAGENET, Interpolation, Preprocess
from atcon.models.small import SmallResNet

__all__ = [
    "MODELS",
    "ModelSpec",
    "WeightsDownloadError",
    "build_model",
    "head_names",
    "load_state_dict_file",
    "model_preprocess",
    "model_spec",
]


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of atcon needs to know about an architecture.

    Attributes:
        name: the name :func:`build_model` takes.
        video: whether it takes clips ``(B, C, T, H, W)``.
        input_size: default square input side (pixels).
        target_layer: Grad-CAM layer, or None for :func:`atcon.attention.find_target_layer`'s
            choice (the last feature map; the last block's first norm of a Vision Transformer).
        build: ``build(num_classes, weights_name_or_None) -> nn.Module``.
    """

    name: str
    video: bool
    input_size: int
    target_layer: str | None
    build: Callable[..., nn.Module]


class WeightsDownloadError(RuntimeError):
    """Pretrained weights could not be downloaded (offline machine, no network access)."""

    user_error = True  # the CLI prints the message alone: it says what to do


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, weights: str | None) -> nn.Module:
        kwargs: dict[str, object] = {}
        if name == "inception_v3":
            kwargs = {"aux_logits": True, "init_weights": weights is None}
        if weights is None:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        model = _download(name, weights, **kwargs)
        _replace_head(model, num_classes)
        return model

    return build


def _download(name: str, weights: str, **kwargs: object) -> nn.Module:
    try:
        enum = torchvision.models.get_model_weights(name)
        w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        options = ", ".join(["DEFAULT", *(m.name for m in torchvision.models.get_model_weights(name))])
        raise ValueError(f"unknown weights {weights!r} for {name}; torchvision offers: {options}") from None
    try:
        return torchvision.models.get_model(name, weights=w, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise WeightsDownloadError(
            f"could not download torchvision weights {name}/{w.name} ({err}). This machine may be "
            f"offline: download {w.url} elsewhere and pass its path as weights, or place it in "
            f"{torch.hub.get_dir()}/checkpoints/."
        ) from err


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Dotted names of the classification head(s): the layers a new class count replaces.

    timm models say it (``pretrained_cfg["classifier"]``, e.g. ``"head"``, ``"classifier"``,
    ``("head", "head_dist")``); otherwise the last ``nn.Linear`` of the model, plus the final
    ``nn.Linear`` of auxiliary heads (Inception's ``AuxLogits.fc``, GoogLeNet's ``aux1.fc2``).
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("classifier"):
        names = cfg["classifier"]
        return (names,) if isinstance(names, str) else tuple(names)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return ()
    last, head = linears[-1]
    aux_parents = {n.split(".")[0] for n, _ in linears if "aux" in n.split(".")[0].lower()}
    aux = [
        [n for n, m in linears if n.split(".")[0] == parent and m.out_features == head.out_features][-1:]
        for parent in sorted(aux_parents)
    ]
    return (last, *(n for names in aux for n in names if n != last))


def _replace_head(model: nn.Module, num_classes: int) -> None:
    heads = head_names(model)
    if not heads:
        raise ValueError(f"{type(model).__name__} has no linear classification head to replace")
    for name in heads:
        old = model.get_submodule(name)
        if isinstance(old, nn.Linear):
            model.set_submodule(name, nn.Linear(old.in_features, num_classes))


_SMALL = ("small", "small3d")

MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", False, 256, "layer4", _torchvision("resnet18")),
    "resnet50": ModelSpec("resnet50", False, 256, "layer4", _torchvision("resnet50")),
    "inception_v3": ModelSpec("inception_v3", False, 299, "Mixed_7c", _torchvision("inception_v3")),
    "r3d_18": ModelSpec("r3d_18", True, 80, "layer4", _torchvision("r3d_18")),
    "small": ModelSpec("small", False, 128, "layer4", lambda num_classes, weights: SmallResNet(num_classes)),
    "small3d": ModelSpec(
        "small3d", True, 64, "layer4", lambda num_classes, weights: SmallResNet(num_classes, dims=3)
    ),
}


def _torchvision_spec(name: str) -> ModelSpec | None:
    video = name in torchvision.models.list_models(module=torchvision.models.video)
    if not video and name not in torchvision.models.list_models(module=torchvision.models):
        return None
    size: Any = 224
    with contextlib.suppress(ValueError, AttributeError, KeyError):
        size = torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    side = int(size[-1] if isinstance(size, tuple | list) else size)
    return ModelSpec(name, video, side, None, _torchvision(name))


def _timm_spec(name: str) -> ModelSpec:
    timm = _import_timm()
    arch = name.removeprefix("timm:")
    if not timm.is_model(arch) or "." in arch:
        close = timm.list_models(f"*{arch.split('.')[0]}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown timm model {arch!r} (pass the architecture, e.g. timm:vit_small_patch16_224, "
            f"and a pretrained tag as weights){hint}"
        )
    cfg = timm.get_pretrained_cfg(arch)
    side = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224
    return ModelSpec(name, False, side, None, partial(_build_timm, arch))


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ValueError("timm: models need the timm package: pip install 'atcon[timm]'") from None
    return timm


def _build_timm(arch: str, num_classes: int, weights: str | None) -> nn.Module:
    """A timm model with a ``num_classes`` head; ``weights`` a pretrained tag or None."""
    timm = _import_timm()
    pretrained = weights is not None
    full = arch if weights is None or weights.upper() == "DEFAULT" else f"{arch}.{weights}"
    if pretrained:
        try:
            timm.get_pretrained_cfg(full, allow_unregistered=False)
        except RuntimeError:
            tags = [m.split(".", 1)[1] for m in timm.list_pretrained(f"{arch}.*")]
            raise ValueError(
                f"unknown weights {weights!r} for timm:{arch}; timm offers: {', '.join(['DEFAULT', *tags])}"
            ) from None
    try:
        # Vision Transformers: any input size (the CPU presets train at 96-128 px).
        return timm.create_model(full, pretrained=pretrained, num_classes=num_classes, dynamic_img_size=True)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
    except OSError as err:  # huggingface_hub's download errors are OSErrors
        raise WeightsDownloadError(
            f"could not download timm weights {full} ({type(err).__name__}: {err}). This machine may "
            f"be offline: download model.safetensors from https://huggingface.co/timm/{full} elsewhere "
            "and pass its path as weights."
        ) from err
    try:
        return timm.create_model(full, pretrained=pretrained, num_classes=num_classes)
    except OSError as err:
        raise WeightsDownloadError(
            f"could not download timm weights {full} ({type(err).__name__}: {err}). This machine may "
            f"be offline: download model.safetensors from https://huggingface.co/timm/{full} elsewhere "
            "and pass its path as weights."
        ) from err


def model_preprocess(name: str) -> Preprocess:
    """The normalisation and resize interpolation the network ``name`` was trained with.

    timm models: their pretrained configuration (``mean``, ``std``, ``interpolation``: mean/std 0.5
    for ``tf_efficientnet_lite0`` and the ``vit_*_augreg`` models); torchvision models: the default
    weights' ``transforms()``; atcon's own networks (``small``) and anything without such a
    record: ImageNet statistics, bilinear. Video models keep their Kinetics statistics
    (:func:`atcon.data.clip_eval_transform`).
    """
    spec = model_spec(name)
    if spec.video or spec.name in _SMALL:
        return IMAGENET
    if name.startswith("timm:"):
        cfg = _import_timm().get_pretrained_cfg(name.removeprefix("timm:"))
        if cfg is None or not cfg.mean or not cfg.std:
            return IMAGENET
        source = f"timm's pretrained config of {name}"
        return Preprocess(tuple(cfg.mean), tuple(cfg.std), _interpolation(str(cfg.interpolation)), source)
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
        weights = torchvision.models.get_model_weights(name).DEFAULT
        t = weights.transforms()
        mode = str(getattr(t, "interpolation", "bilinear")).rsplit(".", 1)[-1].lower()
        return Preprocess(
            tuple(t.mean), tuple(t.std), _interpolation(mode), f"torchvision's {weights} transforms"
        )
    return IMAGENET


def _interpolation(name: str) -> Interpolation:
    """A resize interpolation atcon offers (``bilinear`` for anything else, e.g. timm's ``random``)."""
    if name == "bicubic":
        return "bicubic"
    return "nearest" if name == "nearest" else "bilinear"


def model_spec(name: str) -> ModelSpec:
    """Look up an architecture: :data:`MODELS`, a torchvision model name, or ``timm:NAME``.

    Raises:
        ValueError: an unknown name (the message lists the options), or ``timm:`` without timm.
    """
    if name in MODELS:
        return MODELS[name]
    if name.startswith("timm:"):
        return _timm_spec(name)
    spec = _torchvision_spec(name)
    if spec is None:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)}, any torchvision classification "
            "or video model (efficientnet_b0, convnext_tiny, mobilenet_v3_small, vit_b_16, swin_t, ...), "
            "or timm:NAME (pip install 'atcon[timm]')"
        )
    return spec


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read model weights from a checkpoint file without unpickling arbitrary objects.

    Accepts atcon checkpoints (``{"model": state_dict, ...}``), plain state dicts (``"module."``
    prefixes from DDP are stripped) and ``.safetensors`` files.
    """
    from atcon._safe_load import load_tensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - optional dependency
            raise RuntimeError(
                f"reading {path} needs the 'safetensors' package: pip install safetensors"
            ) from None
        state: Mapping[str, object] = load_file(str(path))
    else:
        state = load_tensors(path)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # type: ignore[assignment]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a model state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}  # type: ignore[misc]


def build_model(
    name: str, num_classes: int, weights: str | os.PathLike[str] | None = None, *, new_head: bool = False
) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head.

    Args:
        name: one of :data:`MODELS` (``resnet18``, ``resnet50``, ``inception_v3``, ``r3d_18``,
            ``small``, ``small3d``), a torchvision model name, or ``timm:NAME``.
        num_classes: number of output classes.
        weights: None, a torchvision weights name / timm pretrained tag, or a checkpoint path
            (see module docstring).
        new_head: with a checkpoint path, keep a fresh classification head when the file's head
            has another number of classes (pretrained backbones, e.g. an ImageNet ``.pth``).

    Raises:
        ValueError: unknown name or weights; a checkpoint for another architecture or number
            of classes (the message names the mismatching keys).
    """
    spec = model_spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if weights is None or str(weights).lower() == "none":
        return spec.build(num_classes, None)
    as_path = Path(weights)
    looks_like_file = as_path.suffix in (".pt", ".pth", ".ckpt", ".safetensors") or as_path.exists()
    if not looks_like_file:
        if spec.name in _SMALL:
            raise ValueError(f"{name} has no torchvision weights; pass a checkpoint path or None")
        return spec.build(num_classes, str(weights))
    model = spec.build(num_classes, None)
    state = load_state_dict_file(as_path)
    own = model.state_dict()
    heads = tuple(f"{h}." for h in head_names(model))
    if new_head:
        state = {
            k: v
            for k, v in state.items()
            if not (k.startswith(heads) and k in own and own[k].shape != v.shape)
        }
        state.update({k: v for k, v in own.items() if k.startswith(heads) and k not in state})
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if keys
        )
        raise ValueError(
            f"checkpoint {as_path} does not fit {name} with {num_classes} classes ({detail}). "
            "Was it saved for another architecture or class count (--model, --classes)? To train a "
            "pretrained backbone with another head, start a fresh one (new_head=True; --new-head of "
            "atcon train and finetune)."
        )
    model.load_state_dict(state)
    return model
