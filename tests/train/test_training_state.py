"""Atomic files: a failure while writing leaves the previous file intact."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from atcon.results_io import atomic_open, atomic_write_text
from atcon.train.training_state import atomic_save, load_checkpoint, rng_state, set_rng_state


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half of the new cont")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary left behind
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable like a normal file


def test_checkpoint_round_trip_and_rng(tmp_path: Path) -> None:
    state = rng_state()
    a = torch.rand(3)
    atomic_save({"rng": state, "w": torch.ones(2)}, tmp_path / "c.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(ckpt["rng"])
    assert torch.equal(torch.rand(3), a)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_the_former_module_name_still_imports(tmp_path: Path) -> None:
    from atcon.train import checkpoint, training_state

    assert checkpoint.atomic_save is training_state.atomic_save
    assert checkpoint.load_checkpoint is training_state.load_checkpoint
    checkpoint.atomic_save({"w": torch.ones(2)}, tmp_path / "last.pt")  # as code written for it does
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(2))
    assert set(checkpoint.__all__) <= set(dir(training_state))
