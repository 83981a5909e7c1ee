"""Evaluation: classification metrics with bootstrap intervals, localization and faithfulness.

Pure functions on tensors (no numpy); everything runs on the inputs' device.
"""

from atcon.evaluate.bootstrap import (
    BootstrapResult,
    MeanMetric,
    PairedBootstrapResult,
    ResampledMetric,
    bootstrap_ci,
    paired_bootstrap_test,
    resample_indices,
    star,
)
from atcon.evaluate.faithfulness import deletion_insertion, gaussian_blur, make_baseline
from atcon.evaluate.localization import (
    LocalizationProtocol,
    LocalizationResult,
    box_coverage,
    boxes_for_pairs,
    localization_metrics,
    minmax_rescale,
    true_positive_pairs,
    upsample_maps,
    values_by_item,
)
from atcon.evaluate.metrics import (
    IGNORE,
    ClassificationMetrics,
    classification_metrics,
    probabilities,
    weighted_average_precision,
    weighted_f1,
)

__all__ = [
    "IGNORE",
    "BootstrapResult",
    "ClassificationMetrics",
    "LocalizationProtocol",
    "LocalizationResult",
    "MeanMetric",
    "PairedBootstrapResult",
    "ResampledMetric",
    "bootstrap_ci",
    "box_coverage",
    "boxes_for_pairs",
    "classification_metrics",
    "deletion_insertion",
    "gaussian_blur",
    "localization_metrics",
    "make_baseline",
    "minmax_rescale",
    "paired_bootstrap_test",
    "probabilities",
    "resample_indices",
    "star",
    "true_positive_pairs",
    "upsample_maps",
    "values_by_item",
    "weighted_average_precision",
    "weighted_f1",
]
