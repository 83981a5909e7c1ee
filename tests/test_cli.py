"""The ``atcon`` console script."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "maps" in capsys.readouterr().out


def test_maps_on_builtin_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maps", "--out", str(tmp_path), "--size", "64"]) == 0
    saved = torch.load(tmp_path / "maps.pt", weights_only=True)
    assert saved["gradcam"].shape == (2, 4, 4)
    assert saved["guided_backprop"].shape == (2, 3, 64, 64)
    assert saved["mask"].shape == (2, 64, 64)
    assert ((saved["consistency"] >= -1) & (saved["consistency"] <= 1)).all()
    assert (tmp_path / "maps.png").stat().st_size > 0
    assert "consistency r" in capsys.readouterr().out


def test_maps_on_files_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["maps", str(tmp_path / "a.png"), "--out", str(out), "--size", "48"]) == 0
    assert torch.load(out / "maps.pt", weights_only=True)["names"] == ["a.png"]
    assert main(["maps", str(tmp_path / "bad.jpg"), "--out", str(out)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["maps", str(tmp_path / "nope.png"), "--out", str(out)]) == 2
