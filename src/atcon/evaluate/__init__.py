"""Evaluation: classification metrics with bootstrap intervals, localization and faithfulness.

The metrics are pure functions on tensors (no numpy) that run on the inputs' device. On top of
them: :func:`evaluate_model` (one batched pass over a dataset, :mod:`~atcon.evaluate.pipeline`),
:func:`summarize` and :class:`EvaluationResult` (:mod:`~atcon.evaluate.results`), :func:`compare`
(paired tests, :mod:`~atcon.evaluate.comparison`) and the Markdown/CSV tables
(:mod:`~atcon.evaluate.tables`).
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
from atcon.evaluate.comparison import Comparison, compare, comparisons_against
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
    Task,
    classification_metrics,
    labels_of,
    probabilities,
    weighted_average_precision,
    weighted_f1,
)
from atcon.evaluate.pipeline import batch_gradcams, evaluate_model
from atcon.evaluate.results import (
    CLASSIFICATION_KEYS,
    GROUP_KEYS,
    LABELS,
    PAIR_KEYS,
    PER_CLASS_KEYS,
    EvalSpec,
    EvaluationResult,
    group_key,
    item_groups,
    metric_label,
    summarize,
)
from atcon.evaluate.tables import (
    comparison_table,
    format_interval,
    per_class_table,
    results_csv,
    results_table,
    table_columns,
)

__all__ = [
    "CLASSIFICATION_KEYS",
    "GROUP_KEYS",
    "IGNORE",
    "LABELS",
    "PAIR_KEYS",
    "PER_CLASS_KEYS",
    "BootstrapResult",
    "ClassificationMetrics",
    "Comparison",
    "EvalSpec",
    "EvaluationResult",
    "LocalizationProtocol",
    "LocalizationResult",
    "MeanMetric",
    "PairedBootstrapResult",
    "ResampledMetric",
    "Task",
    "batch_gradcams",
    "bootstrap_ci",
    "box_coverage",
    "boxes_for_pairs",
    "classification_metrics",
    "compare",
    "comparison_table",
    "comparisons_against",
    "deletion_insertion",
    "evaluate_model",
    "format_interval",
    "gaussian_blur",
    "group_key",
    "item_groups",
    "labels_of",
    "localization_metrics",
    "make_baseline",
    "metric_label",
    "minmax_rescale",
    "paired_bootstrap_test",
    "per_class_table",
    "probabilities",
    "resample_indices",
    "results_csv",
    "results_table",
    "star",
    "summarize",
    "table_columns",
    "true_positive_pairs",
    "upsample_maps",
    "values_by_item",
    "weighted_average_precision",
    "weighted_f1",
]
