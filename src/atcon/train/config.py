"""The training configuration: one frozen dataclass, settable from a TOML file and from flags.

Precedence: field defaults < a command's own defaults (e.g. ``atcon finetune``'s) < TOML file
(``--config``) < command-line flags < what the command forces (its strategy). Unknown keys and
values of the wrong type are errors that name the key. The resolved config is written into the run folder
(``config.toml``) and into every checkpoint.

Every field is documented once, in the ``Attributes`` section of :class:`TrainConfig`'s
docstring; :func:`field_docs` reads it back for ``--help`` (:mod:`atcon.commands._config`) and
for the commented TOML reference (:func:`atcon.train.config_toml.toml_reference`,
``atcon train --print-config``). TOML files are read by :mod:`atcon.train.config_toml`.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Literal

from atcon import settings
from atcon.consistency import ConsistencyConfig
from atcon.data.transforms import Interpolation
from atcon.guidance import BoxLoss
from atcon.settings import check_type, toml_value
from atcon.train.strategies import STRATEGIES, StrategyName, strategy_class

GUARDED_RECIPE: Mapping[str, Any] = types.MappingProxyType({"anchor_weight": 1.0, "select": "label-free"})
"""The measured-safe consistency fine-tuning recipe, ``atcon finetune``'s defaults and the
experiments' guarded method: the prediction anchor (lambda = 1) and label-free selection."""

MIN_IMAGE_SIZE = 16
"""The smallest input side a run accepts."""

__all__ = ["STRATEGIES", "TrainConfig", "check_defaults", "field_docs", "pool_size"]


@dataclass(frozen=True)
class TrainConfig(ConsistencyConfig):
    """Everything that defines a run. The attribute docs below are also the ``--help`` text.

    Longer than the other classes on purpose: a flat declaration of every training setting, each
    with the documentation that is its ``--help`` line; its code (checks, derived configs) is short.

    The consistency loss's settings (resolution, similarity, mask_*, detach_mask, mask_source,
    fold_norm, lean_conv_grad) are inherited from :class:`~atcon.consistency.ConsistencyConfig`
    and documented there: a new consistency option is a field of that class and its use.

    Attributes:
        data: What to train on: a built-in benchmark (cluttered-fashion, fashion-events,
            shortcut-fashion), or a
            path whose format is detected (atcon data info PATH says which): image class
            folders (<class>/<image>, single-label), a CSV image manifest (path, labels[,
            subject, split, boxes, avoid, group]), a COCO JSON file, a VOC-layout folder, a clip
            manifest CSV, or a folder-per-class tree of videos.
        split: Split JSON file with the train/val/test ids; unset: drawn from per_class and
            split_seed and saved in the run folder as split.json.
        per_class: Labeled training samples per class of the drawn few-shot split.
        split_seed: Seed of the few-shot draw (which samples are labeled).
        val_size: Validation images drawn from the training pool: a count (e.g. 100) or a
            fraction of the pool (e.g. 0.2); unset: min(500, 20% of the pool), recorded in
            split.json (500 on PASCAL VOC, as in the paper). Not used when the data gives a
            validation set.
        group_by: subject: subject-disjoint train/val/test sets (no patient in two sets), from a
            CSV manifest's subject column, class folders <class>/<subject>/<image> or COCO
            images' subject keys; unset: images are drawn one by one. Clips are always split by
            subject.
        multi_label: CSV manifests and COCO files: force multi-label (sigmoid outputs, mAP
            selection) or single-label (softmax, macro-F1 selection); unset: multi-label when
            any image has several labels. Class folders are single-label, VOC multi-label.
        data_seed: Seed that generates a built-in benchmark's images.
        data_size: Size of a built-in benchmark relative to its default (e.g. 0.25).
        unlabeled: Unlabeled data for the consistency steps: a folder of images or videos
            (searched recursively), or pool:N for N items of the data's own training pool drawn
            with split_seed (outside val/test; recorded in the run's split.json); unset: the
            split file's unlabeled pool if it has one, else the training samples without their
            labels.
        image_size: Input side in pixels; unset: the model's own input size.
        mean: Normalisation mean of the images, three values (RGB) such as 0.5,0.5,0.5; unset:
            the network's own (timm's pretrained config, torchvision's weights transforms), else
            ImageNet's. The values used are recorded in the run's config and every checkpoint.
        std: Normalisation standard deviation of the images, three values; unset: as mean.
        interpolation: Resize interpolation of the images: bilinear, bicubic or nearest; unset:
            the network's own, else bilinear.
        on_bad_file: What to do with a labeled image or clip that is missing, unreadable or
            corrupt: raise (stop with an error naming it) or skip (check every file before
            training, drop the bad ones and say how many).
        augment: Random augmentation of the training samples.
        model: Architecture: small or small3d (atcon's own), any torchvision classification or
            video model name (resnet18, resnet50, inception_v3, efficientnet_b0,
            mobilenet_v3_large, convnext_tiny, vgg16, densenet121, r3d_18, ...), or timm:NAME
            with timm installed (timm:tf_efficientnet_lite0, timm:convnext_atto,
            timm:vit_small_patch16_224, ...); README "Supported models".
        weights: Starting weights: a torchvision weights name (e.g. IMAGENET1K_V1), a checkpoint
            file, or unset for random initialisation.
        new_head: With a checkpoint whose head has another number of classes, start a fresh
            classification head instead of failing.
        strategy: supervised (labels only), finetune (consistency loss alone, no labels),
            combined (supervised + weighted consistency loss on each batch), alternated
            (supervised and consistency steps drawn at random), simclr (contrastive pretraining).
        epochs: Passes over the training stream(s).
        batch_size: Samples per step and process (at most the training items per process: a larger
            value is clamped to that).
        lr: Adam learning rate; unset: 1e-3, or 5e-6 for finetune.
        weight_decay: Adam weight decay.
        scheduler: Learning-rate schedule: none (constant) or cosine (annealed to 0 over the run).
        clip_grad: Clip the gradient norm to this value before each step (0: no clipping).
        consistency_weight: Weight of the consistency loss in the combined strategy.
        alternate_alpha: Alternated strategy: weight of a labeled sample against an unlabeled
            one when drawing the kind of each step.
        target_layer: Dotted name of the Grad-CAM layer (e.g. layer4); unset: the model's
            default.
        temperature: SimCLR's NT-Xent temperature.
        anchor_weight: Collapse guard: weight lambda of the prediction anchor, the mean KL
            divergence from the starting network's predictions to the fine-tuned network's on
            the same unlabeled batch (0: off; see atcon.train.guard).
        param_anchor_weight: Collapse guard: weight mu of the squared distance to the starting
            weights (0: off).
        param_anchor_fisher: Weight the parameter anchor by the starting network's diagonal
            Fisher information, estimated from unlabeled data (EATA).
        trainable_blocks: Collapse guard: train only the last this many blocks, e.g. 2 = layer4
            and fc of a ResNet (0: all).
        box_weight: Box supervision: weight W of a term that pulls each labeled image's
            Grad-CAM (of its true class) into its boxes and out of its regions to avoid; images
            without either add nothing (0: off; see atcon.guidance). Needs boxes or an avoid
            column in the training data; also in finetune (on the labeled images) and combined.
        box_loss: Box supervision's form: gradcam (spatial softmax of the signed Grad-CAM,
            -log of its mass inside the boxes and of 1 - its mass in the regions to avoid; the
            Grad-CAM layer's resolution) or input_gradient (Ross et al. 2017: squared input
            gradients of the log-probabilities outside the boxes and inside the regions to
            avoid, at pixel resolution).
        boxes_per_class: Box supervision: use the boxes of this many labeled images per class,
            drawn with split_seed; unset: of every annotated training image.
        select: Model selection and stopping: labels (the validation metric, the paper's),
            label-free (held-out consistency within agreement and class-entropy floors; reads no
            label; see atcon.train.labelfree) or last (no selection: the final model).
        holdout: label-free: share of the unlabeled pool held out for the label-free signals
            (without a pool, the validation images are used with their labels unread).
        min_agreement: label-free: smallest admissible share of held-out items whose top-1 class
            is the starting network's.
        min_entropy_ratio: label-free: smallest admissible entropy of the predicted-class
            histogram, relative to the starting network's (the collapse signal).
        plateau_delta: label-free: a smaller decrease of the best held-out consistency loss
            counts as no progress (patience such evaluations stop the run).
        eval_every: Evaluate every this many steps (0: after every epoch).
        patience: Stop after this many evaluations without improvement (0: never).
        device: auto (CUDA when available), cpu or cuda.
        amp: Mixed precision: none, bf16 or fp16 (fp16 needs CUDA).
        workers: DataLoader worker processes.
        seed: Seed of initialisation, sampling and augmentation.
        checkpoint_every: Also write checkpoints/last.pt every this many steps (0: after every
            epoch only).
        eval_batch_size: Batch size of validation.
    """

    # data
    data: str = "cluttered-fashion"
    split: str | None = None
    per_class: int = 4
    split_seed: int = 0
    val_size: int | float | None = None
    group_by: Literal["subject"] | None = None
    multi_label: bool | None = None
    data_seed: int = 0
    data_size: float = 1.0
    unlabeled: str | None = None
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: Interpolation | None = None
    on_bad_file: Literal["raise", "skip"] = "raise"
    augment: bool = True
    # model
    model: str = "small"
    weights: str | None = None
    new_head: bool = False
    # optimisation
    strategy: StrategyName = "supervised"
    epochs: int = 20
    batch_size: int = 4
    lr: float | None = None
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine"] = "none"
    clip_grad: float = 0.0
    consistency_weight: float = 1.0
    alternate_alpha: float = 1.0
    target_layer: str | None = None
    temperature: float = 0.5
    # collapse guards (atcon.train.guard)
    anchor_weight: float = 0.0
    param_anchor_weight: float = 0.0
    param_anchor_fisher: bool = False
    trainable_blocks: int = 0
    # box supervision (atcon.guidance)
    box_weight: float = 0.0
    box_loss: BoxLoss = "gradcam"
    boxes_per_class: int | None = None
    # selection
    select: Literal["labels", "label-free", "last"] = "labels"
    holdout: float = 0.2
    min_agreement: float = 0.9
    min_entropy_ratio: float = 0.95
    plateau_delta: float = 0.002
    eval_every: int = 0
    patience: int = 0
    # runtime
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    workers: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), field_types()[f.name])
        for name in ("mean", "std"):  # TOML arrays and checkpoints' lists become tuples
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        for f in fields(self):  # inf or NaN in any setting would train into NaN weights
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be >= {MIN_IMAGE_SIZE} pixels (networks downsample up to 32x), got "
                f"{self.image_size}; leave it unset for the network's own size"
            )
        if not 0 <= self.seed < 2**63 or not 0 <= self.split_seed < 2**63:
            raise ValueError(
                f"seed and split_seed must be in [0, 2**63), got {self.seed} and {self.split_seed}"
            )
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")
        positive = ("epochs", "batch_size", "per_class", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "eval_every",
            "patience",
            "workers",
            "checkpoint_every",
            "clip_grad",
            "weight_decay",
            "anchor_weight",
            "param_anchor_weight",
            "trainable_blocks",
            "plateau_delta",
            "box_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.val_size is not None and not (
            (isinstance(self.val_size, int) and self.val_size >= 1)
            or (isinstance(self.val_size, float) and 0 < self.val_size < 1)
        ):
            raise ValueError(f"val_size must be a count >= 1 or a fraction in (0, 1), got {self.val_size!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("holdout", "min_agreement", "min_entropy_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.select != "labels" and not strategy_class(self.strategy).label_free_selection:
            raise ValueError(
                f"select={self.select!r} is a choice of consistency fine-tuning; strategy "
                f"{self.strategy!r} selects on labels: use --select labels, or atcon finetune"
            )
        pool_size(self.unlabeled)  # validates "pool:N"
        if self.boxes_per_class is not None and self.boxes_per_class < 1:
            raise ValueError(f"boxes_per_class must be >= 1, got {self.boxes_per_class}")
        if self.box_weight > 0 and strategy_class(self.strategy).two_views:
            raise ValueError(
                f"box_weight is a term of the labeled steps; strategy {self.strategy!r} has none: use "
                "--strategy supervised, combined, alternated or finetune"
            )
        if self.select == "label-free" and self.holdout <= 0 and self.unlabeled is not None:
            raise ValueError("select='label-free' with an unlabeled pool needs holdout > 0 (e.g. 0.2)")
        self.consistency  # noqa: B018 -- builds the ConsistencyConfig, which validates its fields

    @property
    def learning_rate(self) -> float:
        """``lr``, or the strategy's default: 1e-3 (paper), 5e-6 for consistency fine-tuning."""
        return self.lr if self.lr is not None else strategy_class(self.strategy).default_lr

    @property
    def uses_consistency(self) -> bool:
        """Whether the strategy's loss includes the attention-consistency term."""
        return strategy_class(self.strategy).uses_consistency

    @property
    def consistency(self) -> ConsistencyConfig:
        """The consistency-loss variant these fields select (the trainer's one source of it)."""
        # Every ConsistencyConfig field is a TrainConfig field of the same name (a test holds the
        # two sets, types and defaults equal), so a new option is a field here plus its use.
        return ConsistencyConfig(**{f.name: getattr(self, f.name) for f in fields(ConsistencyConfig)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML (None values are omitted: they mean "default")."""
        lines = []
        for key, value in self.to_dict().items():
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        return "\n".join(lines) + "\n"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@cache
def pool_size(unlabeled: str | None) -> int | None:
    """N of an ``unlabeled="pool:N"`` setting, else None (a folder, or unset)."""
    if unlabeled is None or not unlabeled.startswith("pool:"):
        return None
    try:
        n = int(unlabeled.removeprefix("pool:"))
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"unlabeled {unlabeled!r}: write pool:N with N >= 1 (e.g. pool:1000), or give a folder"
        )
    return n


def field_types() -> dict[str, Any]:
    """Each :class:`TrainConfig` field's type (:func:`atcon.settings.field_types`)."""
    return settings.field_types(TrainConfig)


def field_docs() -> dict[str, str]:
    """Each :class:`TrainConfig` field's documentation, read from the class docstrings (the
    consistency fields' from :class:`~atcon.consistency.ConsistencyConfig`'s).

    Returns:
        ``{field name: one-paragraph text}`` for every field, in field order.
    """
    return settings.field_docs(TrainConfig)


def train_settings(exclude: tuple[str, ...] = ()) -> tuple[settings.Setting, ...]:
    """:class:`TrainConfig`'s settings (flags, TOML keys), less ``exclude``."""
    return settings.settings_of(TrainConfig, exclude)


def check_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """A command's defaults, checked like TOML values (known keys, right types)."""
    return settings.check_values(train_settings(), defaults or {}, "command defaults")
