"""Figures (matplotlib, Agg backend, imported lazily; the core never imports this package).

:mod:`~atcon.viz.maps` draws attention maps (the paper's Figures 1-2, clip grids and GIFs);
:mod:`~atcon.viz.curves` draws line plots (training curves, the sanity check, the ablation's
validation curves, experiment metrics against samples per class).
"""

from atcon.viz._pyplot import pyplot, save_figure
from atcon.viz.curves import (
    ablation_curves_figure,
    metric_curves_figure,
    read_metrics_csv,
    sanity_figure,
    training_curves_figure,
)
from atcon.viz.maps import (
    ModelMaps,
    attention_figure,
    attention_row,
    clip_frames_figure,
    clip_gif,
    colorize,
    comparison_figure,
    frame_indices,
    normalise,
    overlay,
    to_display,
)

__all__ = [
    "ModelMaps",
    "ablation_curves_figure",
    "attention_figure",
    "attention_row",
    "clip_frames_figure",
    "clip_gif",
    "colorize",
    "comparison_figure",
    "frame_indices",
    "metric_curves_figure",
    "normalise",
    "overlay",
    "pyplot",
    "read_metrics_csv",
    "sanity_figure",
    "save_figure",
    "to_display",
    "training_curves_figure",
]
