"""Device names from flags and configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.devices import resolve_device


def test_names_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a CUDA device")
def test_cuda_without_a_gpu_is_a_user_error() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_index() -> None:
    assert resolve_device("cuda", index=0) == torch.device("cuda", 0)
    assert resolve_device("cuda:0", index=5) == torch.device("cuda", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_a_gpu_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from atcon.cli import main

    assert main(["train", "--data", "x", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device is available" in err[0] and "internal error" not in err[0]
