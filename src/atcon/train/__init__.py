"""Training: supervised, consistency fine-tuning (fine-tune / combined / alternated), SimCLR."""

from atcon.train.config import STRATEGIES, TrainConfig
from atcon.train.engine import eval_mode, freeze_norm, optimizer_step, supervised_loss
from atcon.train.run import NonFiniteLossError, RunExistsError, train
from atcon.train.simclr import NTXentLoss, ProjectionHead, SimCLRNet

__all__ = [
    "STRATEGIES",
    "NTXentLoss",
    "NonFiniteLossError",
    "ProjectionHead",
    "RunExistsError",
    "SimCLRNet",
    "TrainConfig",
    "eval_mode",
    "freeze_norm",
    "optimizer_step",
    "supervised_loss",
    "train",
]
