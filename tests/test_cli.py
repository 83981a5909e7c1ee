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


def test_maps_says_how_many_non_image_files_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.JPG"):
        Image.new("RGB", (20, 20), (10, 200, 10)).save(
            folder / name, format="PNG" if name.endswith("png") else "JPEG"
        )
    (folder / "notes.txt").write_text("x")
    (folder / "labels.csv").write_text("x")
    (folder / ".DS_Store").write_bytes(b"")
    (folder / "sub").mkdir()
    assert main(["maps", str(folder), "--out", str(tmp_path / "out"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 non-image file(s) in the given folder(s): labels.csv, notes.txt" in out
    assert torch.load(tmp_path / "out" / "maps.pt", weights_only=True)["names"] == ["a.png", "b.JPG"]
    assert main(["maps", str(folder / "a.png"), "--out", str(tmp_path / "out"), "--size", "32"]) == 0
    assert "skipped" not in capsys.readouterr().out


def _boom(*args: object, **kwargs: object) -> None:
    raise TypeError("unsupported operand")


def test_internal_errors_are_short_unless_debugging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("atcon.commands.maps.sample_images", _boom)
    monkeypatch.delenv("ATCON_DEBUG", raising=False)
    args = ["maps", "--out", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("atcon maps: internal error: TypeError: unsupported operand\n")
    assert "--debug" in err and "ATCON_DEBUG=1" in err
    for debug_args in (["--debug", *args], [*args, "--debug"]):
        assert main(debug_args) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "in _boom" in err
    monkeypatch.setenv("ATCON_DEBUG", "1")
    assert main(args) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    # A user error with --debug shows where it came from too, and still exits 2.
    assert main(["--debug", "maps", str(tmp_path / "nope.png"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith(f"no such image or folder: {tmp_path / 'nope.png'}")


def test_data_subcommands_accept_debug_after_the_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "info", str(tmp_path / "missing.csv"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_offline_pretrained_weights_print_one_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.error

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.delenv("ATCON_DEBUG", raising=False)
    code = main(["maps", "--model", "resnet18", "--weights", "IMAGENET1K_V1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("atcon")]
    assert len(lines) == 1 and lines[0].startswith(
        "atcon maps: error: could not download torchvision weights"
    )
    assert "offline" in lines[0] and str(tmp_path / "hub") in lines[0]


def test_unsafe_checkpoint_is_refused_in_one_paragraph(
    tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, evil)
    commands = [
        ["finetune", "--init", str(evil), "--data", str(tiny_voc), "--out", str(tmp_path / "ft")],
        ["evaluate", "--checkpoint", str(evil)],
        ["maps", "--weights", str(evil), "--out", str(tmp_path / "m")],
    ]
    for args in commands:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err  # one paragraph
        assert f"{evil} is not a safe checkpoint" in err and "could run code" in err
        assert "weights_only" not in err and "torch.serialization" not in err
        assert "state_dict" in err and ".safetensors" in err  # what atcon accepts
    assert not marker.exists()
    assert not (tmp_path / "ft").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import atcon

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"atcon {atcon.__version__} (torch ")
