"""Attention supervision from a few boxes (and regions to avoid): :mod:`~atcon.guidance.loss`
for the two forms of the term, :mod:`~atcon.guidance.regions` for the masks,
:mod:`~atcon.guidance.selection` for ``--boxes-per-class``."""

from atcon.guidance.loss import (
    BOX_LOSSES,
    BoxLoss,
    Guided,
    box_attention_loss,
    box_guided_forward,
    input_gradient_penalty,
)
from atcon.guidance.regions import cell_coverage, irrelevant_pixels, pair_masks, supervised_pairs
from atcon.guidance.selection import annotated_classes, boxed_ids

__all__ = [
    "BOX_LOSSES",
    "BoxLoss",
    "Guided",
    "annotated_classes",
    "box_attention_loss",
    "box_guided_forward",
    "boxed_ids",
    "cell_coverage",
    "input_gradient_penalty",
    "irrelevant_pixels",
    "pair_masks",
    "supervised_pairs",
]
