"""Attention maps: Grad-CAM and Guided Backpropagation, batched and differentiable."""

from atcon.attention.guided import GuidedState, guided_relu_mode
from atcon.attention.hooks import capture_features, find_target_layer, preserve_model, resolve_layer
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

__all__ = [
    "GuidedState",
    "as_logits",
    "capture_features",
    "find_target_layer",
    "forward_pass",
    "gradcam",
    "gradcam_and_guided_backprop",
    "gradcam_from",
    "guided_backprop",
    "guided_relu_mode",
    "preserve_model",
    "resolve_layer",
    "select_targets",
    "upsample_to_input",
]
