"""The attention-consistency loss and its building blocks (paper Sec. 3, Table 4).

The option vocabularies live here once (``Resolution``, ``SimilarityName``, ``MaskScale``,
``MaskSource`` and their tuples of values); configs elsewhere import them.
"""

from atcon.consistency.loss import (
    MASK_SOURCES,
    RESOLUTIONS,
    AttentionConsistencyLoss,
    ConsistencyConfig,
    ConsistencyResult,
    MaskSource,
    Resolution,
    attention_consistency,
)
from atcon.consistency.masking import MASK_SCALES, MaskScale, saliency, soft_mask
from atcon.consistency.similarity import (
    SIMILARITIES,
    SimilarityName,
    cross_correlation,
    dissimilarity,
    min_max,
    pearson,
    ssim,
    standardize,
)

__all__ = [
    "MASK_SCALES",
    "MASK_SOURCES",
    "RESOLUTIONS",
    "SIMILARITIES",
    "AttentionConsistencyLoss",
    "ConsistencyConfig",
    "ConsistencyResult",
    "MaskScale",
    "MaskSource",
    "Resolution",
    "SimilarityName",
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
