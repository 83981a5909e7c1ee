"""End to end through the CLI with timm models (tiny, random weights): train, finetune, evaluate,
explain, sanity and maps on a tiny generated VOC-layout benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atcon.cli import main

pytest.importorskip("timm")

# timm's own tiny test networks: a ViT (GELU, class token) and an EfficientNet (SiLU, SE gates).
MODELS = ["timm:test_vit", "timm:test_efficientnet"]


@pytest.fixture(scope="module", params=MODELS)
def run(
    request: pytest.FixtureRequest, tiny_voc: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """``atcon train`` then ``atcon finetune`` from its checkpoint; returns (model, finetuned run)."""
    model = request.param
    root = tmp_path_factory.mktemp(model.replace(":", "-"))
    common = ["--data", str(tiny_voc), "--model", model, "--image-size", "64", "--per-class", "2"]
    common += ["--batch-size", "2", "--epochs", "1", "--no-progress"]
    assert main(["train", *common, "--out", str(root / "sup")]) == 0
    source = root / "sup" / "checkpoints" / "best.pt"
    assert main(["finetune", *common, "--weights", str(source), "--out", str(root / "ft")]) == 0
    return model, root / "ft"


def test_finetune_changes_the_weights(run: tuple[str, Path]) -> None:
    model, ft = run
    tuned = torch.load(ft / "checkpoints" / "last.pt", weights_only=True)
    source = torch.load(ft.parent / "sup" / "checkpoints" / "best.pt", weights_only=True)
    assert tuned["model_name"] == model
    changed = [
        k
        for k, v in tuned["model"].items()
        if v.is_floating_point() and not torch.equal(v, source["model"][k])
    ]
    assert changed  # the consistency loss moved some weights


def test_evaluate(run: tuple[str, Path], tmp_path: Path) -> None:
    _, ft = run
    out = tmp_path / "ev"
    checkpoint = str(ft / "checkpoints" / "best.pt")
    args = ["evaluate", "--checkpoint", checkpoint, "--out", str(out), "--resamples", "20", "--device", "cpu"]
    assert main(args) == 0
    assert any(p.suffix == ".json" for p in out.iterdir())


def test_explain(run: tuple[str, Path], tmp_path: Path) -> None:
    model, ft = run
    out = tmp_path / "ex"
    assert (
        main(["explain", "test:2", "--checkpoint", str(ft / "checkpoints" / "best.pt"), "--out", str(out)])
        == 0
    )
    raw = torch.load(out / "maps.pt", weights_only=True)
    first = raw["models"][0]
    expected = (2, 4, 4) if model == "timm:test_vit" else (2, 2, 2)  # 16 px patches / stride 32 at 64 px
    assert first["gradcam"].shape == expected and first["guided_backprop"].shape == (2, 3, 64, 64)
    if model == "timm:test_vit":
        assert first["layer"].endswith(".norm1")


def test_sanity(run: tuple[str, Path], tmp_path: Path) -> None:
    _, ft = run
    out = tmp_path / "sanity"
    assert (
        main(
            [
                "sanity",
                "--checkpoint",
                str(ft / "checkpoints" / "best.pt"),
                "--n",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = json.loads((out / "sanity.json").read_text())
    assert info["n_items"] == 2 and info["blocks"]


@pytest.mark.parametrize("model", MODELS)
def test_maps(model: str, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert main(["maps", "--model", model, "--classes", "3", "--size", "64", "--out", str(out)]) == 0
    raw = torch.load(out / "maps.pt", weights_only=True)
    assert raw["model"] == model and raw["guided_backprop"].shape[-2:] == (64, 64)
