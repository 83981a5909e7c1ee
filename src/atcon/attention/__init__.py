"""Attention maps: Grad-CAM and Guided Backpropagation, batched and differentiable."""

from atcon.attention.guided import (
    GuidedState,
    guided_mode,
    guided_relu_mode,
    require_activations,
    twice_differentiable,
)
from atcon.attention.hooks import (
    FeatureReader,
    capture_features,
    feature_reader,
    find_target_layer,
    preserve_model,
    resolve_layer,
)
from atcon.attention.maps import (
    as_logits,
    forward_pass,
    gradcam,
    gradcam_and_guided_backprop,
    gradcam_from,
    guided_backprop,
    select_targets,
)
from atcon.attention.ops import upsample_to_input
from atcon.attention.tokens import TargetLayer

__all__ = [
    "FeatureReader",
    "GuidedState",
    "TargetLayer",
    "as_logits",
    "capture_features",
    "feature_reader",
    "find_target_layer",
    "forward_pass",
    "gradcam",
    "gradcam_and_guided_backprop",
    "gradcam_from",
    "guided_backprop",
    "guided_mode",
    "guided_relu_mode",
    "preserve_model",
    "require_activations",
    "resolve_layer",
    "select_targets",
    "twice_differentiable",
    "upsample_to_input",
]
