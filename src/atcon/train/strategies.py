"""Training strategies, one class each: what a strategy trains on, its steps and batches, its loss.

A run reads batches from up to two *streams*:

* ``"labeled"``: the few-shot training set (labels available), sampled with ``seed``;
* ``"unlabeled"``: ``--unlabeled FOLDER`` when given, else the training images without their
  labels, sampled with ``seed + 1``.

A :class:`Strategy` says which streams it reads (:meth:`~Strategy.streams_for`), whether each item
comes as two augmented views (:attr:`~Strategy.two_views`), how many steps an epoch has
(:attr:`~Strategy.steps_per_epoch`), which streams step ``b`` of epoch ``e`` reads
(:meth:`~Strategy.draw`, a pure function of ``(seed, e, b)`` so that a resumed run replays
it), and the loss of one step's batches (:meth:`~Strategy.loss`) from the terms in
:class:`LossTerms`. The trainer asks the strategy and never compares names.

To add a strategy, subclass :class:`Strategy` here, decorate it with :func:`register`, and add
its name to :data:`StrategyName` (the config's type, hence the CLI's choices).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, get_args

import torch
from torch import Tensor, nn

from atcon.attention.hooks import eval_mode
from atcon.consistency import ConsistencyConfig
from atcon.evaluate.metrics import Task, labels_of
from atcon.guidance import BoxLoss, Guided, box_guided_forward
from atcon.train.engine import consistency_loss, consistency_result, output_loss, supervised_loss
from atcon.train.guard import Guard
from atcon.train.sampling import item_seed
from atcon.train.selection import (
    LastEvaluation,
    LowestTrainLoss,
    SelectionRule,
    ValidationMetric,
    selection_metric,
)
from atcon.train.simclr import NTXentLoss, SimCLRNet

if TYPE_CHECKING:
    from atcon.train.config import TrainConfig

StrategyName = Literal["supervised", "finetune", "combined", "alternated", "simclr"]
Stream = Literal["labeled", "unlabeled"]
Batch = tuple[Tensor, dict[str, Any]]

# Seed offset of the alternated strategy's per-step draw.
_DRAW_SEED = 2


@dataclass(frozen=True)
class BoxTerm:
    """Box supervision of the labeled batches (:mod:`atcon.guidance`).

    Attributes:
        weight: ``W``.
        form: ``"gradcam"`` or ``"input_gradient"``.
        boxed: ids of the images whose boxes and regions to avoid are used (``--boxes-per-class``).
    """

    weight: float
    form: BoxLoss
    boxed: frozenset[str]

    def use(self, target: Mapping[str, Any]) -> Tensor:
        """``(B,)`` bool: the batch's items whose annotations are used."""
        return torch.tensor([str(i) in self.boxed for i in target["image_id"]], dtype=torch.bool)


@dataclass
class LossTerms:
    """The loss terms strategies combine, bound to one run's network and settings.

    Attributes:
        model: the network being trained (possibly DistributedDataParallel-wrapped).
        task: ``"multilabel"`` or ``"multiclass"``.
        consistency: the consistency-loss variant.
        target_layer: Grad-CAM layer of the consistency loss (None: discovered).
        mask_model: the network behind ``mask_source="random_network"`` masks, else None.
        temperature: NT-Xent temperature of the contrastive term.
        guard: collapse guards added to the consistency term, or None (the paper's loss).
        boxes: box supervision of the labeled batches, or None.
    """

    model: nn.Module
    task: Task
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    target_layer: str | None = None
    mask_model: nn.Module | None = None
    temperature: float = 0.5
    guard: Guard | None = None
    boxes: BoxTerm | None = None
    ntxent: NTXentLoss = field(init=False)

    def __post_init__(self) -> None:
        self.ntxent = NTXentLoss(self.temperature)

    def supervised(self, batch: Batch) -> Tensor:
        """Classification loss of a labeled batch, the model in training mode (plus the box
        supervision term when the run has one, from the same forward pass)."""
        x, target = batch
        self.model.train()
        labels = labels_of(target, self.task)
        if self.boxes is None:
            return supervised_loss(self.model, x, labels.to(x.device, non_blocking=True), self.task)
        guided = self._guided(x, target, labels)
        loss = output_loss(guided.output, labels.to(x.device, non_blocking=True), self.task)
        return loss + self.boxes.weight * guided.penalty

    def box_supervision(self, batch: Batch) -> Tensor:
        """The weighted box supervision term alone of a labeled batch, the model in eval mode
        (consistency fine-tuning's labeled steps: normalisation stays frozen)."""
        assert self.boxes is not None
        x, target = batch
        with eval_mode(self.model):
            guided = self._guided(x, target, labels_of(target, self.task))
        return self.boxes.weight * guided.penalty

    def _guided(self, x: Tensor, target: dict[str, Any], labels: Tensor) -> Guided:
        assert self.boxes is not None
        return box_guided_forward(
            self.model,
            x,
            labels,
            target,
            self.task,
            self.boxes.form,
            target_layer=self.target_layer,
            use=self.boxes.use(target),
        )

    def attention(self, batch: Batch) -> Tensor:
        """Mean attention-consistency loss of a batch (labels unused; the model in eval mode),
        plus the collapse guards' penalty when the run has any."""
        x = batch[0]
        if self.guard is None:
            return consistency_loss(self.model, x, self.consistency, self.target_layer, self.mask_model)
        result = consistency_result(self.model, x, self.consistency, self.target_layer, self.mask_model)
        return result.loss.mean() + self.guard.penalty(self.model, x, result.logits)

    def contrastive(self, batch: Batch) -> Tensor:
        """NT-Xent loss of a batch of view pairs ``(B, 2, C, *spatial)``, the model in training mode."""
        views = batch[0]
        x0, x1 = torch.cat([views[:, 0], views[:, 1]]).chunk(2)
        self.model.train()
        return self.ntxent(self.model(x0), self.model(x1))


class Strategy:
    """What one training strategy does; instances are bound to a run's config and stream sizes.

    Args:
        cfg: the run's config.
        items: number of items of each stream the strategy reads.
        batches: batches per epoch of each stream it reads (one process's share).

    Attributes:
        reads: the streams this run reads (:meth:`streams_for` of its config).

    Class attributes:
        name: the config value (``--strategy NAME``).
        streams: the streams it reads (by default; :meth:`streams_for` may add some).
        two_views: its items are pairs of independently augmented views (contrastive).
        uses_consistency: its loss includes the attention-consistency term.
        default_lr: learning rate when the config leaves ``lr`` unset.
        start_is_candidate: evaluate the starting network before the first step, so that model
            selection may keep it (fine-tuning that does not help is not kept).
        label_free_selection: it can select and stop on label-free signals (``select="label-free"``).
    """

    name: ClassVar[str]
    streams: ClassVar[tuple[Stream, ...]]
    two_views: ClassVar[bool] = False
    uses_consistency: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-3
    start_is_candidate: ClassVar[bool] = False
    label_free_selection: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, items: Mapping[Stream, int], batches: Mapping[Stream, int]) -> None:
        self.cfg = cfg
        self.reads = self.streams_for(cfg)
        self.items = {s: items[s] for s in self.reads}
        self.batches = {s: batches[s] for s in self.reads}

    @classmethod
    def streams_for(cls, cfg: TrainConfig) -> tuple[Stream, ...]:
        """The streams a run with ``cfg`` reads (default: :attr:`streams`)."""
        return cls.streams

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: by default one pass over every stream it reads."""
        return sum(self.batches.values())

    def draw(self, epoch: int, step: int) -> tuple[Stream, ...]:
        """The streams step ``step`` of ``epoch`` reads one batch from (default: all of them)."""
        return self.reads

    def loss(self, terms: LossTerms, batch: Mapping[Stream, Batch]) -> Tensor:
        """The scalar loss of one step, from one batch per drawn stream (already on the device)."""
        raise NotImplementedError

    def network(self, classifier: nn.Module) -> nn.Module:
        """The network it trains around ``classifier`` (default: the classifier itself)."""
        return classifier

    def selection(self, task: Task, patience: int) -> SelectionRule:
        """How its runs pick the best checkpoint: the validation metric of the task."""
        return ValidationMetric(selection_metric(task), patience)


StrategyT = TypeVar("StrategyT", bound=type[Strategy])

REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: StrategyT) -> StrategyT:
    """Class decorator: make a :class:`Strategy` available under its ``name``."""
    if cls.name not in get_args(StrategyName):
        raise ValueError(f"strategy {cls.name!r} is not in StrategyName; add it there")
    REGISTRY[cls.name] = cls
    return cls


@register
class Supervised(Strategy):
    """Classification loss on the labeled batches."""

    name = "supervised"
    streams = ("labeled",)

    def loss(self, terms: LossTerms, batch: Mapping[Stream, Batch]) -> Tensor:
        return terms.supervised(batch["labeled"])


@register
class Finetune(Strategy):
    """Attention-consistency loss alone on unlabeled batches (paper Sec. 3.3), with frozen
    normalisation, at a small learning rate; the starting network stays a selection candidate.

    With box supervision (``box_weight > 0``) each step also reads a labeled batch and adds the
    box term of its images (an epoch is still one pass over the unlabeled stream; the labeled
    one cycles)."""

    name = "finetune"
    streams = ("unlabeled",)
    uses_consistency = True
    default_lr = 5e-6
    start_is_candidate = True
    label_free_selection = True

    @classmethod
    def streams_for(cls, cfg: TrainConfig) -> tuple[Stream, ...]:
        return ("unlabeled", "labeled") if cfg.box_weight > 0 else cls.streams

    @property
    def steps_per_epoch(self) -> int:
        return self.batches["unlabeled"]

    def loss(self, terms: LossTerms, batch: Mapping[Stream, Batch]) -> Tensor:
        loss = terms.attention(batch["unlabeled"])
        if "labeled" in batch:
            loss = loss + terms.box_supervision(batch["labeled"])
        return loss

    def selection(self, task: Task, patience: int) -> SelectionRule:
        """The validation metric (the paper's), label-free signals (``select="label-free"``), or
        none (``select="last"``)."""
        if self.cfg.select == "last":
            return LastEvaluation(patience)
        if self.cfg.select != "label-free":
            return super().selection(task, patience)
        from atcon.train.labelfree import LabelFreeSelection

        return LabelFreeSelection(
            self.cfg.min_agreement, self.cfg.min_entropy_ratio, self.cfg.plateau_delta, patience
        )


@register
class Combined(Strategy):
    """``L = L_sup + consistency_weight * L_con`` on each labeled batch (paper Sec. 5)."""

    name = "combined"
    streams = ("labeled",)
    uses_consistency = True

    def loss(self, terms: LossTerms, batch: Mapping[Stream, Batch]) -> Tensor:
        labeled = batch["labeled"]
        return terms.supervised(labeled) + self.cfg.consistency_weight * terms.attention(labeled)


@register
class Alternated(Strategy):
    """Each step is either a supervised step on a labeled batch or a consistency step on an
    unlabeled one (paper Sec. 5), drawn at random with

    ``P(supervised) = alpha * n_labeled / (alpha * n_labeled + n_unlabeled)``

    (``alpha = alternate_alpha``); an epoch has as many steps as both streams have batches.
    """

    name = "alternated"
    streams = ("labeled", "unlabeled")
    uses_consistency = True

    @property
    def p_supervised(self) -> float:
        weight = self.cfg.alternate_alpha * self.items["labeled"]
        return weight / (weight + self.items["unlabeled"])

    def draw(self, epoch: int, step: int) -> tuple[Stream, ...]:
        # Seeded by (seed, epoch, step) only: the same on every process and after a resume.
        g = torch.Generator().manual_seed(item_seed(self.cfg.seed + _DRAW_SEED, epoch, step))
        return ("labeled",) if torch.rand((), generator=g).item() < self.p_supervised else ("unlabeled",)

    def loss(self, terms: LossTerms, batch: Mapping[Stream, Batch]) -> Tensor:
        if "labeled" in batch:
            return terms.supervised(batch["labeled"])
        return terms.attention(batch["unlabeled"])


@register
class SimCLR(Strategy):
    """SimCLR pretraining: NT-Xent on two augmented views of each labeled item (labels unused),
    with a projection head; selection by the lowest training loss."""

    name = "simclr"
    streams = ("labeled",)
    two_views = True

    def loss(self, terms: LossTerms, batch: Mapping[Stream, Batch]) -> Tensor:
        return terms.contrastive(batch["labeled"])

    def network(self, classifier: nn.Module) -> nn.Module:
        return SimCLRNet(classifier)

    def selection(self, task: Task, patience: int) -> SelectionRule:
        return LowestTrainLoss(patience)


STRATEGIES: tuple[str, ...] = get_args(StrategyName)


def strategy_class(name: str) -> type[Strategy]:
    """The :class:`Strategy` subclass registered as ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(REGISTRY)}") from None
