"""Cascading parameter-randomisation sanity check: rank correlation, the cascade, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from atcon.cli import main
from atcon.evaluate.sanity import (
    MAP_KINDS,
    METRICS,
    SanityResult,
    cascading_randomization,
    rank_correlation,
)
from atcon.models import cascade_blocks
from tests.conftest import TinyCNN


def _scipy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tensor(
        [spearmanr(u.flatten().numpy(), v.flatten().numpy())[0] for u, v in zip(a, b)], dtype=torch.float32
    )


def test_rank_correlation_matches_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 6, 7, generator=g)
    b = a + torch.randn(5, 6, 7, generator=g) * torch.linspace(0.1, 3.0, 5)[:, None, None]
    torch.testing.assert_close(rank_correlation(a, b), _scipy(a, b), rtol=0, atol=1e-5)
    # Ties get their average rank, as in scipy (ReLU'd maps are mostly tied zeros).
    tied_a, tied_b = a.round().clamp(min=0), b.round()
    torch.testing.assert_close(rank_correlation(tied_a, tied_b), _scipy(tied_a, tied_b), rtol=0, atol=1e-5)
    # Invariant to increasing transforms; sign flips under a decreasing one.
    torch.testing.assert_close(rank_correlation(a, a.exp()), torch.ones(5))
    torch.testing.assert_close(rank_correlation(a, -a), -torch.ones(5))


def test_rank_correlation_of_constant_maps_is_zero() -> None:
    a = torch.randn(3, 4, 4)
    const = torch.full((3, 4, 4), 2.5)
    const[1] = 0.0
    r = rank_correlation(const, a)
    assert torch.equal(r, torch.zeros(3)) and torch.equal(rank_correlation(const, const), torch.zeros(3))
    with pytest.raises(ValueError, match="one shape"):
        rank_correlation(a, a[:, :2])


def test_cascade_leaves_the_model_alone_and_decorrelates_gradcam(tiny: TinyCNN) -> None:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    tiny.train()  # the caller's mode and BatchNorm statistics must survive too
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    result = cascading_randomization(tiny, x, seed=3)
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and tiny.training
    assert all(p.requires_grad for p in tiny.parameters())
    with torch.no_grad():  # the explained classes are the trained model's own top-1 predictions
        assert torch.equal(result.targets, tiny.eval()(x).argmax(1))

    blocks = cascade_blocks(tiny)
    assert result.blocks == blocks[::-1] and result.layer == "features" and result.targets.shape == (4,)
    for kind in MAP_KINDS:
        for metric in METRICS:
            values = result.metrics[kind][metric]
            assert values.shape == (len(blocks), 4) and bool(values.isfinite().all())
    # A fully random network's Grad-CAM is far from the trained one's (which has correlation 1 with itself).
    assert float(result.mean()["gradcam"]["rank_correlation"][-1]) < 0.5
    # The mask is an increasing function of the GB saliency: same ranks, so the same rank correlation.
    torch.testing.assert_close(
        result.metrics["mask"]["rank_correlation"], result.metrics["guided_backprop"]["rank_correlation"]
    )
    # Seeded: the same call gives the same numbers.
    again = cascading_randomization(tiny, x, seed=3)
    torch.testing.assert_close(again.metrics["gradcam"]["ssim"], result.metrics["gradcam"]["ssim"])


def test_randomising_only_the_head_changes_gradcam(tiny: TinyCNN) -> None:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = cascading_randomization(tiny, x, blocks=["head.1"])
    assert result.blocks == ["head.1"]
    # New class weights re-weight the same feature maps: Grad-CAM changes, the features do not.
    assert float(result.mean()["gradcam"]["rank_correlation"][0]) < 0.99
    empty = cascading_randomization(tiny, x, blocks=[])
    assert empty.blocks == [] and empty.metrics["gradcam"]["ssim"].shape == (0, 4)
    with pytest.raises(ValueError, match="does not exist"):
        cascading_randomization(tiny, x, blocks=["nope"])


def test_clips_and_markdown_and_figure(tiny3d: TinyCNN, tmp_path: Path) -> None:
    x = torch.randn(2, 3, 4, 12, 12, generator=torch.Generator().manual_seed(3))
    result = cascading_randomization(tiny3d, x, target_layer="features")
    assert isinstance(result, SanityResult) and result.n_items == 2
    assert result.metrics["guided_backprop"]["ssim"].shape == (len(cascade_blocks(tiny3d)), 2)
    table = result.to_markdown().splitlines()
    assert len(table) == 2 + len(result.blocks) and table[2].startswith("| `head.1` |")
    rows = result.to_dict()["rows"]
    assert [r["randomized_through"] for r in rows] == result.blocks and set(rows[0]) >= set(MAP_KINDS)


@pytest.fixture(scope="module")
def checkpoint(tiny_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch ``small`` run on the tiny VOC-layout benchmark."""
    from atcon.train import TrainConfig, train

    run = tmp_path_factory.mktemp("sanity") / "run"
    cfg = TrainConfig(data=str(tiny_voc), model="small", image_size=32, per_class=1, epochs=1, batch_size=2)
    train(cfg, run, progress=False)
    return run / "checkpoints" / "best.pt"


def test_cli_writes_results(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sanity"
    assert (
        main(["sanity", "--checkpoint", str(checkpoint), "--n", "3", "--device", "cpu", "--out", str(out)])
        == 0
    )
    for name in ("sanity.json", "sanity.md", "sanity.png", "report.html"):
        assert (out / name).is_file()
    info = json.loads((out / "sanity.json").read_text())
    blocks = ["fc", "layer4", "layer3", "layer2", "layer1", "stem.1", "stem.0"]
    assert info["blocks"] == blocks and [r["randomized_through"] for r in info["rows"]] == blocks
    assert (
        info["n_items"] == 3 and info["layer"] == "layer4" and len(info["per_item"]["mask"]["ssim"][0]) == 3
    )
    assert "| `fc` |" in capsys.readouterr().out
    assert main(["sanity", "--checkpoint", str(checkpoint), "--n", "0", "--out", str(out)]) == 2
