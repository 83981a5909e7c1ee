"""Faults while saving a checkpoint: Ctrl-C and a full disk keep the previous file and say what happened."""

from __future__ import annotations

import errno
import os
import signal
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from atcon.train import training_state as ck


def test_ctrl_c_during_a_save_finishes_the_file_then_interrupts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = torch.save

    def interrupted(obj: object, f: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write
        real(obj, f)  # type: ignore[arg-type]

    monkeypatch.setattr(ck.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):  # the CLI turns it into exit status 130
        ck.atomic_save({"w": torch.ones(3)}, tmp_path / "last.pt")
    assert torch.equal(ck.load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(3))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck.atomic_save({"w": torch.zeros(2)}, tmp_path / "last.pt")

    def full(obj: object, f: object) -> None:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
        )

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ck.torch, "save", full)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(
        OSError, match=r"no space left on the device while saving .*last\.pt .*previous last\.pt is kept"
    ) as err:
        ck.atomic_save({"w": torch.ones(2)}, tmp_path / "last.pt")
    assert err.value.errno == errno.ENOSPC
    assert torch.equal(ck.load_checkpoint(tmp_path / "last.pt")["w"], torch.zeros(2))
    assert not list(tmp_path.glob(".*.tmp"))  # no partial file left
