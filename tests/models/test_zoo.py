"""Model zoo: heads, checkpoints (weights-only), clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import atcon
from atcon.models import MODELS, build_model, load_state_dict_file


@pytest.mark.parametrize("name", ["small", "small3d", "resnet18"])
def test_head_and_target_layer(name: str) -> None:
    model = build_model(name, 7).eval()
    spec = MODELS[name]
    x = torch.randn(2, 3, 8, 32, 32) if spec.video else torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 7)
    assert atcon.find_target_layer(model, x) == spec.target_layer


def test_inception_heads_replaced() -> None:
    model = build_model("inception_v3", 4)
    assert model.fc.out_features == 4 and model.AuxLogits.fc.out_features == 4


def test_checkpoint_round_trip_and_ddp_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_model("small", 3)
    torch.save(
        {"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 2}, tmp_path / "c.pt"
    )
    loaded = build_model("small", 3, tmp_path / "c.pt")
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_errors(tmp_path: Path) -> None:
    torch.save(build_model("small", 3).state_dict(), tmp_path / "three.pt")
    with pytest.raises(ValueError, match="does not fit small with 5 classes"):
        build_model("small", 5, tmp_path / "three.pt")
    with pytest.raises(ValueError, match="does not fit small3d"):
        build_model("small3d", 3, tmp_path / "three.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_model("small", 3, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9000", 3)
    # Arbitrary pickled objects are refused (weights_only=True).
    torch.save({"model": build_model("small", 3).state_dict(), "evil": Path("x")}, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match="not a safe checkpoint"):
        load_state_dict_file(tmp_path / "obj.pt")


def test_new_head_keeps_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pre = build_model("resnet18", 1000)
    torch.save(pre.state_dict(), tmp_path / "imagenet.pth")
    model = build_model("resnet18", 5, tmp_path / "imagenet.pth", new_head=True)
    assert model.fc.out_features == 5
    assert torch.equal(model.layer4[1].conv2.weight, pre.layer4[1].conv2.weight)


def test_unknown_torchvision_weights_name() -> None:
    with pytest.raises(ValueError, match="unknown weights"):
        build_model("resnet18", 5, "IMAGENET_V9")
