"""A network's parameterised blocks, and re-drawing their weights (sanity checks, mask controls)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["cascade_blocks", "randomized_copy", "reinitialize"]


def cascade_blocks(model: nn.Module) -> list[str]:
    """Names of the model's parameterised blocks, input to output.

    Top-level children, with ``nn.Sequential`` / ``nn.ModuleList`` containers opened one level
    (``layer1.0``, ``layer1.1``, ...), keeping those that own parameters: the units the
    parameter-randomisation test of Adebayo et al. (2018) re-initialises one after another,
    starting from the last.
    """
    names: list[str] = []
    for name, child in model.named_children():
        parts = (
            [(f"{name}.{n}", m) for n, m in child.named_children()]
            if isinstance(child, nn.Sequential | nn.ModuleList) and not _owns_parameters(child)
            else [(name, child)]
        )
        names += [n for n, m in parts if any(True for _ in m.parameters())]
    return names


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


@torch.no_grad()
def reinitialize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter of ``module`` (in place) with its layers' default initialisation.

    Every submodule with ``reset_parameters`` is reset (BatchNorm also forgets its running
    statistics), drawing from the CPU generator seeded with ``seed``: the result is reproducible,
    the same on every device, and neither the global CPU nor any CUDA generator is touched.
    The module is moved to the CPU for the draw and back. Returns ``module``.
    """
    device = next(itertools.chain(module.parameters(), module.buffers()), torch.empty(0)).device
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only (torch.manual_seed would reseed CUDA too)
        module.cpu()
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            elif isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_running_stats()
    return module.to(device)


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with all weights re-initialised (:func:`reinitialize`), frozen.

    The copy keeps the architecture (and so the ReLUs Guided Backprop needs) but none of the
    learned weights: the "randomly re-initialised network" control of the consistency mask.
    """
    import copy

    clone = reinitialize(copy.deepcopy(model), seed)
    clone.requires_grad_(False)
    return clone.eval()
