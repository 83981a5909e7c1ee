"""Everything a run's loss needs besides the network it trains: :func:`build_loss_terms`.

That is the frozen starting network (the collapse guards' anchor and label-free selection's
reference), the "random network" mask model, the collapse guard with its parameter anchor (and
Fisher weights), the box term, and the hold-out loader of the label-free signals. They are built
in one place, from the settings they read, so that which setting switches on which part is
answered here and nowhere else.

Copies of the starting network are taken before a strategy wraps the classifier (SimCLR sets its
head aside), so :func:`build_loss_terms` runs before the network is built;
:meth:`LossSetup.bind` then ties the terms to the network being trained (possibly
DistributedDataParallel-wrapped). Nothing here draws from the global random generator: where
it is built does not change a seeded run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from atcon.consistency import ConsistencyConfig
from atcon.data import collate
from atcon.evaluate.metrics import Task
from atcon.guidance import BoxLoss, boxed_ids
from atcon.models import randomized_copy
from atcon.train.guard import Guard, ParameterAnchor, fisher_diagonal, guard_summary
from atcon.train.strategies import BoxTerm, LossTerms
from atcon.train.streams import LoaderSettings, eval_loader

if TYPE_CHECKING:
    from atcon.train.config import TrainConfig
    from atcon.train.data import TaskData

# Offset of the seed that re-initialises the "random network" mask model.
MASK_MODEL_SEED = 104729


@dataclass(frozen=True)
class GuardSettings:
    """The collapse guards a run switches on (:mod:`atcon.train.guard`).

    Attributes:
        anchor_weight: ``lambda`` of the prediction anchor.
        param_anchor_weight: ``mu`` of the parameter anchor.
        param_anchor_fisher: weight the parameter anchor by the starting network's Fisher.
        trainable_blocks: top blocks left trainable (already applied to the network; named in
            the guard's log line, as it guards too).
    """

    anchor_weight: float = 0.0
    param_anchor_weight: float = 0.0
    param_anchor_fisher: bool = False
    trainable_blocks: int = 0

    @property
    def any(self) -> bool:
        """Whether a guard term is on (each needs the frozen starting network)."""
        return self.anchor_weight > 0 or self.param_anchor_weight > 0

    @classmethod
    def of(cls, cfg: TrainConfig) -> GuardSettings:
        """The guard settings of ``cfg``."""
        return cls(cfg.anchor_weight, cfg.param_anchor_weight, cfg.param_anchor_fisher, cfg.trainable_blocks)


@dataclass(frozen=True)
class BoxSettings:
    """Box supervision of the labeled batches (:mod:`atcon.guidance`).

    Attributes:
        weight: ``W`` (0: off).
        form: ``"gradcam"`` or ``"input_gradient"``.
        per_class: boxed images used per class (None: every annotated one).
        split_seed: seed of that draw (the run's split seed).
    """

    weight: float = 0.0
    form: BoxLoss = "gradcam"
    per_class: int | None = None
    split_seed: int = 0

    @classmethod
    def of(cls, cfg: TrainConfig) -> BoxSettings:
        """The box settings of ``cfg``."""
        return cls(cfg.box_weight, cfg.box_loss, cfg.boxes_per_class, cfg.split_seed)


@dataclass(frozen=True)
class FisherProbe:
    """Where the parameter anchor's Fisher weights come from, kept so that a resume from a
    checkpoint written before they were saved estimates exactly the same again.

    Attributes:
        source: unlabeled training items (no label is read).
        batch_size: batch size of the estimate.
        seed: the fixed seed of the items' augmentation.
        task: ``"multilabel"`` or ``"multiclass"``.
        device: where to compute.
    """

    source: Any
    batch_size: int
    seed: int
    task: Task
    device: torch.device

    def weights(self, reference: nn.Module, names: list[str]) -> dict[str, Tensor]:
        """Diagonal Fisher of ``reference`` over the parameters ``names``; the global random
        state is left as it was (the run's seeded draws do not depend on whether it ran)."""
        loader = DataLoader(self.source, batch_size=self.batch_size, shuffle=False, collate_fn=collate)
        probe = copy.deepcopy(reference).requires_grad_(False)
        for name, p in probe.named_parameters():
            p.requires_grad_(name in names)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return fisher_diagonal(probe, (x for x, _ in loader), self.task, device=self.device)


@dataclass
class LossSetup:
    """The parts of a run's loss terms; the frozen networks are saved in ``last`` checkpoints.

    Attributes:
        task: ``"multilabel"`` or ``"multiclass"``.
        consistency: the consistency-loss variant.
        target_layer: Grad-CAM layer (None: discovered).
        temperature: NT-Xent temperature.
        reference: the frozen starting network, or None (no guard, no label-free selection).
        mask_model: the "random network" mask model, or None.
        guard: the collapse guards, or None (the paper's loss).
        param_anchor: the guard's parameter anchor, or None.
        boxes: the box term, or None.
        holdout_loader: the held-out unlabeled slice of label-free selection, or None.
        fisher: how the parameter anchor's Fisher weights are estimated.
    """

    task: Task
    consistency: ConsistencyConfig
    target_layer: str | None
    temperature: float
    reference: nn.Module | None
    mask_model: nn.Module | None
    guard: Guard | None
    param_anchor: ParameterAnchor | None
    boxes: BoxTerm | None
    holdout_loader: DataLoader[Any] | None
    fisher: FisherProbe

    def bind(self, model: nn.Module) -> LossTerms:
        """The loss terms computed on ``model``, the network being trained."""
        return LossTerms(
            model,
            self.task,
            self.consistency,
            self.target_layer,
            self.mask_model,
            self.temperature,
            self.guard,
            self.boxes,
        )


def build_loss_terms(
    classifier: nn.Module,
    data: TaskData,
    *,
    consistency: ConsistencyConfig,
    target_layer: str | None,
    temperature: float,
    uses_consistency: bool,
    label_free: bool,
    guard: GuardSettings,
    boxes: BoxSettings,
    loaders: LoaderSettings,
    seed: int,
    device: torch.device,
    resume: bool,
    log: Callable[[str], None],
) -> LossSetup:
    """Build the parts of a run's loss around its starting ``classifier`` (before a strategy wraps it).

    Args:
        classifier: the starting network, as built (its trainable parameters already chosen).
        data: the run's datasets.
        consistency: the consistency-loss variant (its ``mask_source`` picks the mask model).
        target_layer: Grad-CAM layer of the consistency and box terms.
        temperature: NT-Xent temperature.
        uses_consistency: the strategy's loss includes the consistency term (only then are the
            guards and label-free selection's reference built).
        label_free: model selection on label-free signals (``select="label-free"``).
        guard: the collapse guards' settings.
        boxes: the box term's settings.
        loaders: batch sizes and workers of the Fisher estimate and the hold-out loader.
        seed: the run's seed (mask model, Fisher augmentation).
        device: where the frozen networks live.
        resume: the run continues from a checkpoint: the Fisher weights are placeholders that
            the checkpoint's replace (nothing is computed from the starting weights).
        log: where the guard's and box term's log lines go.
    """
    needs_reference = uses_consistency and (guard.any or label_free)
    reference = copy.deepcopy(classifier).eval().requires_grad_(False).to(device) if needs_reference else None
    mask_model = (
        randomized_copy(classifier, seed + MASK_MODEL_SEED).to(device)
        if consistency.mask_source == "random_network"
        else None
    )
    fisher = FisherProbe(
        data.unlabeled if data.unlabeled is not None else data.train,
        loaders.batch_size,
        seed,
        data.task,
        device,
    )
    built = _guard(classifier, reference, data.task, guard, fisher, resume, log)
    return LossSetup(
        data.task,
        consistency,
        target_layer,
        temperature,
        reference,
        mask_model,
        built[0] if built is not None else None,
        built[1] if built is not None else None,
        _box_term(data, boxes, log),
        eval_loader(data.holdout, loaders, device) if label_free and data.holdout is not None else None,
        fisher,
    )


def _guard(
    classifier: nn.Module,
    reference: nn.Module | None,
    task: Task,
    settings: GuardSettings,
    fisher: FisherProbe,
    resume: bool,
    log: Callable[[str], None],
) -> tuple[Guard, ParameterAnchor | None] | None:
    """The collapse guards the settings switch on, with their parameter anchor (None: the paper's loss)."""
    if reference is None or not settings.any:
        return None
    anchor = None
    if settings.param_anchor_weight > 0:
        names = [n for n, p in classifier.named_parameters() if p.requires_grad]
        weights = None
        if settings.param_anchor_fisher:
            # On resume, the checkpoint's Fisher weights replace these placeholders.
            weights = (
                {n: torch.ones((), device=fisher.device) for n in names}
                if resume
                else fisher.weights(reference, names)
            )
        anchor = ParameterAnchor(reference, names, weights)
    log(f"collapse guard: {guard_summary(settings)}")
    return Guard(reference, task, settings.anchor_weight, anchor, settings.param_anchor_weight), anchor


def _box_term(data: TaskData, settings: BoxSettings, log: Callable[[str], None]) -> BoxTerm | None:
    """Box supervision of the labeled batches, when the settings ask for it."""
    if settings.weight <= 0:
        return None
    if data.video:
        raise ValueError("box supervision (box_weight) is for images; clips have no boxes to pull maps into")
    boxed = boxed_ids(data.train, settings.per_class, settings.split_seed)
    if not boxed:
        raise ValueError(
            "box_weight needs boxes or regions to avoid on the labeled training images (a manifest's "
            "boxes/avoid columns, COCO annotations, VOC objects); these have none"
        )
    per_class = "all annotated" if settings.per_class is None else f"{settings.per_class} per class"
    log(
        f"box supervision: {settings.form}, weight {settings.weight:g}, {len(boxed)} of "
        f"{len(data.train)} labeled images ({per_class})"  # type: ignore[arg-type]
    )
    return BoxTerm(settings.weight, settings.form, boxed)
