"""Training: supervised, consistency fine-tuning (fine-tune / combined / alternated), SimCLR.

``train(cfg, run_dir)`` runs one configured run (:mod:`atcon.train.run`); the strategies live in
:mod:`atcon.train.strategies`, model selection in :mod:`atcon.train.selection`.
"""

from atcon.train.config import TrainConfig
from atcon.train.engine import eval_mode, optimizer_step, supervised_loss
from atcon.train.run import NonFiniteLossError, RunExistsError, RunLockedError, train
from atcon.train.selection import SelectionRule, Verdict
from atcon.train.simclr import NTXentLoss, ProjectionHead, SimCLRNet
from atcon.train.strategies import STRATEGIES, Strategy

__all__ = [
    "STRATEGIES",
    "NTXentLoss",
    "NonFiniteLossError",
    "ProjectionHead",
    "RunExistsError",
    "RunLockedError",
    "SelectionRule",
    "SimCLRNet",
    "Strategy",
    "TrainConfig",
    "Verdict",
    "eval_mode",
    "optimizer_step",
    "supervised_loss",
    "train",
]
