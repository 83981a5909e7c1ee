"""Former name of :mod:`atcon.trained_models`, kept so that existing code keeps importing.

New code imports from :mod:`atcon.trained_models` (loading a trained run's model, its test items,
and evaluating it); :mod:`atcon.train.training_state` holds the resumable training checkpoints.
"""

from atcon.trained_models import (
    LoadedModel,
    checkpoint_dataset,
    display_stats,
    evaluate_checkpoint,
    file_sha256,
    load_model,
)

__all__ = [
    "LoadedModel",
    "checkpoint_dataset",
    "display_stats",
    "evaluate_checkpoint",
    "file_sha256",
    "load_model",
]
