"""atcon: attention-map consistency for PyTorch classifiers.

Differentiable, batched Grad-CAM and Guided Backpropagation, and the unsupervised
attention-consistency loss that makes them agree (Algorithm 1 of "Harmonizing Attention").

>>> import atcon
>>> cam = atcon.gradcam(model, x)                      # (B, h, w)
>>> gb = atcon.guided_backprop(model, x)               # like x
>>> loss = atcon.AttentionConsistencyLoss(model)(x)    # scalar, needs no labels
>>> out = atcon.GuardedConsistencyLoss(model)(x)       # with the collapse guard: out.loss
"""

from atcon.attention import (
    find_target_layer,
    gradcam,
    gradcam_and_guided_backprop,
    guided_backprop,
    upsample_to_input,
)
from atcon.consistency import AttentionConsistencyLoss, ConsistencyConfig, attention_consistency
from atcon.finetuning import Decision, GuardedConsistencyLoss, GuardedLoss, LabelFreeSelector

__version__ = "0.1.0"

__all__ = [
    "AttentionConsistencyLoss",
    "ConsistencyConfig",
    "Decision",
    "GuardedConsistencyLoss",
    "GuardedLoss",
    "LabelFreeSelector",
    "__version__",
    "attention_consistency",
    "find_target_layer",
    "gradcam",
    "gradcam_and_guided_backprop",
    "guided_backprop",
    "upsample_to_input",
]
