"""The README's own-loop snippet, run as written, in 2 DistributedDataParallel processes (gloo).

The snippet is read from README.md (the code block after its ``readme-snippet: own-loop``
marker), given a DDP-wrapped classifier and each rank's own unlabeled and held-out batches, and
executed unchanged. Every optimizer step's parameters are recorded on each rank: the ranks must
agree at every step (DDP averaged the gradients; no "unused parameters" error at step 2), the
steps must move the network, and both ranks must take the same keep/stop decisions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from tests.conftest import TinyCNN, randomize_bn, run_ranks

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-snippet: own-loop.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, "the README's own-loop snippet (marker + python block) is missing"
    return match.group(1)


def worker(rank: int) -> dict[str, object]:
    torch.manual_seed(0)
    net = randomize_bn(TinyCNN(classes=4, width=6))
    model = nn.parallel.DistributedDataParallel(net)
    g = torch.Generator().manual_seed(10 + rank)  # each rank its own data
    unlabeled = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(3)]
    held_out = [(torch.randn(4, 3, 16, 16, generator=g), torch.zeros(4)) for _ in range(2)]
    steps: list[torch.Tensor] = []

    def record(_opt: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
        steps.append(torch.cat([p.detach().flatten() for p in net.parameters()]).clone())

    handle = register_optimizer_step_post_hook(record)
    namespace = {"model": model, "unlabeled": unlabeled, "held_out": held_out}
    try:
        exec(compile(snippet(), "README.md:own-loop", "exec"), namespace)
    finally:
        handle.remove()
    selector = namespace["selector"]
    return {
        "steps": torch.stack(steps),
        "final": torch.cat([p.detach().flatten() for p in net.parameters()]),
        "history": [(h["selection"], h["best"]) for h in selector.history],  # type: ignore[attr-defined]
    }


@pytest.mark.timeout(240)
def test_readme_snippet_runs_under_ddp(tmp_path: Path) -> None:
    got: list[Any] = run_ranks(worker, tmp_path)
    assert len(got[0]["steps"]) >= 3  # at least one epoch of 3 steps ran
    torch.testing.assert_close(got[0]["steps"], got[1]["steps"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[0]["final"], got[1]["final"], rtol=0, atol=1e-6)
    assert (got[0]["steps"][-1] - got[0]["steps"][0]).abs().max() > 0  # the steps moved the network
    assert got[0]["history"] == got[1]["history"]  # one decision on every rank
    assert len(got[0]["history"]) >= 2  # the start and at least one epoch were judged
