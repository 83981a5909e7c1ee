"""The attention-consistency loss and its building blocks (paper Sec. 3, Table 4)."""

from atcon.consistency.loss import (
    RESOLUTIONS,
    AttentionConsistencyLoss,
    ConsistencyConfig,
    ConsistencyResult,
    attention_consistency,
)
from atcon.consistency.masking import saliency, soft_mask
from atcon.consistency.similarity import (
    SIMILARITIES,
    cross_correlation,
    dissimilarity,
    min_max,
    pearson,
    ssim,
    standardize,
)

__all__ = [
    "RESOLUTIONS",
    "SIMILARITIES",
    "AttentionConsistencyLoss",
    "ConsistencyConfig",
    "ConsistencyResult",
    "attention_consistency",
    "cross_correlation",
    "dissimilarity",
    "min_max",
    "pearson",
    "saliency",
    "soft_mask",
    "ssim",
    "standardize",
]
