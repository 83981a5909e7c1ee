"""What the trainer asks of the network it trains: how it is saved and loaded, and whether
validation metrics apply to its outputs.

A network that wraps a classifier (:class:`~atcon.train.simclr.SimCLRNet`) answers itself
(:class:`TrainedNetwork`); a plain classifier gets the same answers from :class:`PlainClassifier`.
So the trainer and the checkpoint code never ask which kind of network they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class TrainedNetwork(Protocol):
    """The checkpoint and validation interface of a trained network.

    ``classifier_state`` is the checkpoint's ``"model"`` (always loadable as the plain
    classifier), ``extra_state`` its ``"projection"`` (what else a resume needs, or None).
    """

    has_validation_metrics: bool

    def classifier_state(self) -> dict[str, Tensor]: ...

    def load_classifier_state(self, state: Mapping[str, Tensor]) -> None: ...

    def extra_state(self) -> dict[str, Tensor] | None: ...

    def load_extra_state(self, state: Mapping[str, Tensor] | None) -> None: ...


class PlainClassifier:
    """:class:`TrainedNetwork` of a classifier trained as it is: its own state dict, nothing
    else to resume, validated on its class scores."""

    has_validation_metrics = True

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def classifier_state(self) -> dict[str, Tensor]:
        return self.net.state_dict()

    def load_classifier_state(self, state: Mapping[str, Tensor]) -> None:
        self.net.load_state_dict(state)

    def extra_state(self) -> dict[str, Tensor] | None:
        return None

    def load_extra_state(self, state: Mapping[str, Tensor] | None) -> None:
        """Nothing to load: a plain classifier is all in :meth:`classifier_state`."""


def trained_network(net: nn.Module) -> TrainedNetwork:
    """``net`` itself when it answers the interface, else its :class:`PlainClassifier`."""
    return net if isinstance(net, TrainedNetwork) else PlainClassifier(net)
