"""Former name of :mod:`atcon.train.training_state`, kept so that existing code keeps importing.

New code imports resumable training checkpoints from :mod:`atcon.train.training_state` and the
atomic file writers from :mod:`atcon.results_io`.
"""

from atcon.train.training_state import (
    atomic_open,
    atomic_save,
    atomic_write_text,
    load_checkpoint,
    non_finite_entries,
    rng_state,
    set_rng_state,
)

__all__ = [
    "atomic_open",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "non_finite_entries",
    "rng_state",
    "set_rng_state",
]
