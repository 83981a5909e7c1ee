"""SimCLR pretraining pieces (Chen et al. 2020): projection head, NT-Xent loss, encoder access.

Building blocks, not a framework: :class:`NTXentLoss` takes two batches of embeddings and
returns a scalar; :class:`SimCLRNet` wraps a classifier so that its pooled features feed a
projection head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.train.distributed import gather_with_grad, world_size

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover
    dist = None  # type: ignore[assignment]


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy (SimCLR Eq. 1), averaged over all 2N anchors.

    For each embedding the positive is the other view of the same sample and the negatives are
    the ``2N - 2`` embeddings of every other sample in the batch. With
    ``gather_distributed=True`` and several processes, the negatives come from the batches of
    **all** processes (gathered with gradients), so 2 processes at batch b equal 1 process at
    batch 2b.

    Args:
        temperature: softmax temperature ``tau`` (> 0).
        gather_distributed: gather embeddings across processes when a process group exists.

    Shape:
        z0, z1: ``(N, D)`` embeddings of the two views (row i of each is the same sample).
        Returns a scalar.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        if z0.shape != z1.shape or z0.ndim != 2:
            raise ValueError(f"z0 and z1 must both be (N, D); got {tuple(z0.shape)} and {tuple(z1.shape)}")
        n = z0.shape[0]
        local = F.normalize(torch.cat([z0, z1]).float(), dim=1)  # (2n, D): views 0 then views 1
        everyone = local
        offset = 0
        if self.gather_distributed and world_size() > 1:
            everyone = gather_with_grad(local)  # rank-major: [r0 v0, r0 v1, r1 v0, r1 v1, ...]
            offset = dist.get_rank() * 2 * n
        logits = local @ everyone.T / self.temperature
        idx = torch.arange(2 * n, device=local.device)
        self_idx = idx + offset
        logits = logits.masked_fill(F.one_hot(self_idx, everyone.shape[0]).bool(), float("-inf"))
        positive = (idx + n) % (2 * n) + offset
        return F.cross_entropy(logits, positive)


class ProjectionHead(nn.Sequential):
    """MLP ``in -> hidden -> ReLU -> out`` mapping encoder features to the contrastive space."""

    def __init__(self, in_features: int, hidden: int = 512, out_features: int = 128) -> None:
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
        )


class SimCLRNet(nn.Module):
    """A classifier's encoder (everything before ``fc``) followed by a projection head.

    The classifier's ``fc`` is set aside (not a submodule here, so DistributedDataParallel sees
    only parameters that receive gradients) and put back by :meth:`classifier`. Checkpoints hold
    the classifier (:meth:`classifier_state`, encoder and set-aside head, loadable as the plain
    classifier) and, to resume, the projection head (:meth:`extra_state`); this class is the one
    place that knows how its parts map onto them.

    Shape:
        x: ``(B, C, *spatial)``. Returns ``(B, out_features)``.
    """

    has_validation_metrics: ClassVar[bool] = False
    """Its outputs are embeddings, not class scores: no validation metric applies."""

    def __init__(self, model: nn.Module, hidden: int = 512, out_features: int = 128) -> None:
        super().__init__()
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise TypeError(
                f"{type(model).__name__} has no `fc` linear head; SimCLR needs one to find its features"
            )
        self.__dict__["_fc"] = fc
        model.fc = nn.Identity()
        self.encoder = model
        self.projection = ProjectionHead(fc.in_features, hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.encoder(x)
        feats = getattr(feats, "logits", feats)  # inception in train mode
        return self.projection(feats)

    @property
    def head(self) -> nn.Linear:
        """The classifier's set-aside ``fc`` head (trained by none of SimCLR's steps)."""
        fc: nn.Linear = self.__dict__["_fc"]
        return fc

    def classifier(self) -> nn.Module:
        """Return the wrapped classifier with its ``fc`` head restored."""
        self.encoder.fc = self.head
        return self.encoder

    def classifier_state(self) -> dict[str, Tensor]:
        """The classifier's weights: the encoder's with the set-aside head's as ``fc.*``, the keys
        of the plain classifier (so a SimCLR checkpoint loads as one)."""
        state = dict(self.encoder.state_dict())
        state.update({f"fc.{k}": v for k, v in self.head.state_dict().items()})
        return state

    def load_classifier_state(self, state: Mapping[str, Tensor]) -> None:
        """Load weights written by :meth:`classifier_state`."""
        self.head.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("fc.")})
        self.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})

    def extra_state(self) -> dict[str, Tensor]:
        """The projection head's weights: what a resume needs besides the classifier."""
        return self.projection.state_dict()

    def load_extra_state(self, state: Mapping[str, Tensor] | None) -> None:
        """Load weights written by :meth:`extra_state`."""
        if state is None:
            raise ValueError("the checkpoint has no projection head to resume SimCLR from")
        self.projection.load_state_dict(state)
