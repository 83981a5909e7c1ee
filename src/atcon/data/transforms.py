"""The paper's augmentations (section 4.2), built from ``torchvision.transforms.v2``.

Image transforms take ``(image, target)`` with a ``tv_tensors.Image`` and a target dict holding
``tv_tensors.BoundingBoxes``; v2 moves the boxes with every geometric step, so evaluation boxes stay
aligned with the resized image. Clip transforms take a ``tv_tensors.Video`` ``(T, C, H, W)``: v2 draws
one set of random parameters per call and applies it to every frame, so a clip is augmented as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Statistics torchvision's Kinetics-400 video models (r3d_18) were trained with.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

IMAGE_SIZE = {"resnet50": 256, "inception_v3": 299}
"""Input side per architecture (paper, section 4.2); other models default to 256."""

Interpolation = Literal["bilinear", "bicubic", "nearest"]
_MODES = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """How a network wants its images: normalisation statistics and resize interpolation.

    Attributes:
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        source: where the values come from (for logs and reports).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: Interpolation = "bilinear"
    source: str = "ImageNet statistics (default)"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")
        if self.interpolation not in _MODES:
            raise ValueError(f"interpolation must be one of {', '.join(_MODES)}, got {self.interpolation!r}")

    @property
    def mode(self) -> v2.InterpolationMode:
        """The interpolation as torchvision's enum."""
        return _MODES[self.interpolation]


IMAGENET = Preprocess()
"""ImageNet statistics, bilinear resizing: atcon's default for networks that name none."""


def _box_side_tensors(sample: Any) -> tuple[torch.Tensor, ...]:
    """Per-box tensors that must be dropped together with their boxes."""
    target = sample[1] if isinstance(sample, (tuple, list)) and len(sample) > 1 else sample
    if not isinstance(target, dict):
        return ()
    return tuple(target[k] for k in ("box_labels", "difficult") if k in target)


class _SanitizeBoxes(v2.SanitizeBoundingBoxes):
    """``SanitizeBoundingBoxes`` that lets samples without boxes through (plain images, clips) and
    sanitizes the regions to avoid (``target["avoid"]``) on their own: torchvision's transform
    drops the same rows from every box tensor of a sample, by the first one's validity."""

    def forward(self, *inputs: Any) -> Any:
        from torch.utils._pytree import tree_flatten

        flat, _ = tree_flatten(inputs)
        if not any(isinstance(x, tv_tensors.BoundingBoxes) for x in flat):
            return inputs if len(inputs) > 1 else inputs[0]
        target = inputs[1] if len(inputs) == 2 and isinstance(inputs[1], dict) else None
        avoid = target.get("avoid") if target is not None else None
        if target is None or not isinstance(avoid, tv_tensors.BoundingBoxes):
            return super().forward(*inputs)
        rest = {k: v for k, v in target.items() if k != "avoid"}
        image, rest = super().forward(inputs[0], rest)
        rest["avoid"] = super().forward(avoid) if avoid.shape[0] else avoid
        return image, rest


def image_train_transform(
    size: int = 256, rotation: float = 10.0, preprocess: Preprocess = IMAGENET
) -> v2.Transform:
    """Training augmentation for images (paper, section 4.2).

    Random rotation up to ``rotation`` degrees, then with probability 0.5 a flip that is horizontal or
    vertical (equally likely), resize to ``size x size``, normalisation (the network's own statistics,
    ImageNet's by default). Boxes are rotated (enclosing box), flipped, resized, clamped to the image,
    and dropped with their labels when they leave it.

    Args:
        size: Output side: 256 for ResNet-50, 299 for Inception-v3 (see ``IMAGE_SIZE``).
        rotation: Maximum rotation in degrees.
        preprocess: normalisation statistics and resize interpolation.

    Returns:
        A transform called as ``transform(image, target)``.

    Shape:
        image ``(3, H, W)`` ``uint8`` -> ``(3, size, size)`` ``float32``.
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomRotation(rotation),
            v2.RandomApply(
                [v2.RandomChoice([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)])], p=0.5
            ),
            v2.Resize((size, size), interpolation=preprocess.mode, antialias=True),
            v2.ClampBoundingBoxes(),
            # The default getter would pick the multi-hot "labels" (per image, not per box).
            _SanitizeBoxes(labels_getter=_box_side_tensors),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocess.mean), list(preprocess.std)),
        ]
    )


def image_eval_transform(size: int = 256, preprocess: Preprocess = IMAGENET) -> v2.Transform:
    """Evaluation transform for images: resize to ``size x size`` and normalisation (the network's
    own statistics, ImageNet's by default).

    Boxes are scaled with the image (x by ``size / W``, y by ``size / H``).

    Shape:
        image ``(3, H, W)`` ``uint8`` -> ``(3, size, size)`` ``float32``.
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), interpolation=preprocess.mode, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocess.mean), list(preprocess.std)),
        ]
    )


class RandomCropFraction(v2.Transform):
    """Crop a random window of ``fraction`` of the height and of the width, then resize it back.

    The paper crops 90% of the frame in x and y; resizing back keeps every clip of a batch, and the
    evaluation clips, the same size. One window per call: every frame of a video (and every box) gets
    the same crop.

    Args:
        fraction: Side fraction kept, in ``(0, 1]``.
        resize_back: Resize the crop to the input size.
    """

    def __init__(self, fraction: float = 0.9, resize_back: bool = True) -> None:
        super().__init__()
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.resize_back = resize_back

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        from torchvision.transforms.v2._utils import query_size

        height, width = query_size(flat_inputs)
        h, w = max(1, round(height * self.fraction)), max(1, round(width * self.fraction))
        top = int(torch.randint(0, height - h + 1, ()).item())
        left = int(torch.randint(0, width - w + 1, ()).item())
        return {"top": top, "left": left, "height": h, "width": w, "size": (height, width)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(
            F.crop,
            inpt,
            top=params["top"],
            left=params["left"],
            height=params["height"],
            width=params["width"],
        )
        if self.resize_back:
            out = self._call_kernel(F.resize, out, size=list(params["size"]), antialias=True)
        return out


def clip_train_transform(
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.4), crop_fraction: float = 0.9
) -> v2.Transform:
    """Training augmentation for clips (paper, section 4.2), identical across the frames of a clip.

    Colour jitter (brightness, contrast, saturation 0.8, hue 0.4), random crop of 90% of the frame in x
    and y (resized back), random horizontal flip, Kinetics normalisation.

    Args:
        jitter: Brightness, contrast, saturation, hue of ``ColorJitter``.
        crop_fraction: Side fraction of the random crop.

    Returns:
        A transform on ``tv_tensors.Video`` (and an optional target dict with per-frame boxes).

    Shape:
        ``(T, 3, H, W)`` ``uint8`` -> ``(T, 3, H, W)`` ``float32``.
    """
    b, c, s, h = jitter
    return v2.Compose(
        [
            v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h),
            RandomCropFraction(crop_fraction),
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(KINETICS_MEAN, KINETICS_STD),
        ]
    )


def clip_simclr_transform(size: int, scale: tuple[float, float] = (0.3, 1.0)) -> v2.Transform:
    """Augmentation of the two SimCLR views of a clip, identical across its frames.

    Random resized crop (``scale`` of the area, back to ``size x size``), horizontal flip, mild
    colour jitter (0.4, 0.4, 0.4, hue 0.05), Kinetics normalisation. The supervised clip jitter
    (:func:`clip_train_transform`, hue 0.4) changes two views of a tinted synthetic clip more than
    clips differ from each other, and contrastive training then does not start: on
    ``fashion-events`` its NT-Xent loss stayed at chance, while with this one it falls within
    the first epochs.

    Shape:
        ``(T, 3, H, W)`` ``uint8`` -> ``(T, 3, size, size)`` ``float32``.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop((size, size), scale=scale, antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(KINETICS_MEAN, KINETICS_STD),
        ]
    )


def clip_eval_transform() -> v2.Transform:
    """Evaluation transform for clips: ``float32`` and Kinetics normalisation.

    Shape:
        ``(T, 3, H, W)`` ``uint8`` -> ``(T, 3, H, W)`` ``float32``.
    """
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(KINETICS_MEAN, KINETICS_STD)])


def denormalize(
    x: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """Undo ``Normalize`` for display; channels on dim ``-3`` (images ``(..., 3, H, W)``, clips ``(T, 3, H, W)``).

    Shape:
        any ``(..., 3, H, W)``, returned unchanged in shape.
    """
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return x.as_subclass(torch.Tensor) * s + m


__all__ = [
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "Interpolation",
    "Preprocess",
    "RandomCropFraction",
    "clip_eval_transform",
    "clip_train_transform",
    "denormalize",
    "image_eval_transform",
    "image_train_transform",
    "tv_tensors",
]
