"""The paper's experiments as resumable commands (``atcon experiment NAME``)."""

from atcon.experiments.ablation import correlation_table, run_ablation, validation_losses

__all__ = ["correlation_table", "run_ablation", "validation_losses"]
