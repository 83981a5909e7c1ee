"""One writer per run folder: a live holder's lock refuses a second run (also with --overwrite),
a stale lock is recovered, and a finished or failed run leaves no lock behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from atcon.train import RunLockedError, train
from atcon.train.rundir import LOCK, run_lock
from tests.train.test_run import config


def lock_of(pid: int, host: str | None = None) -> str:
    return json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01 00:00:00"})


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_a_live_holder_refuses_a_second_run_and_overwrite_touches_nothing(
    tiny_voc: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(config(tiny_voc, epochs=1), run, progress=False)
    assert not (run / LOCK).exists()  # released when the run ended
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(lock_of(sleeper.pid))
        with pytest.raises(RunLockedError, match=f"in use by process {sleeper.pid}"):
            train(config(tiny_voc, epochs=1), run, overwrite=True, progress=False)
        with pytest.raises(RunLockedError):
            train(config(tiny_voc), run, resume=True, progress=False)
        after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != LOCK}
        assert after == before  # nothing of the old run was touched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_lock_is_held_and_a_dead_processes_lock_is_stale(
    tiny_voc: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(lock_of(os.getppid(), host="another-host"))
    with pytest.raises(RunLockedError, match="another-host"):
        train(config(tiny_voc, epochs=1), run, progress=False)
    (run / LOCK).write_text(lock_of(dead_pid()))  # left by a killed run
    summary = train(config(tiny_voc, epochs=1), run, progress=False)
    assert summary["epochs_run"] == 1 and not (run / LOCK).exists()


def test_the_lock_is_exclusive_and_released_on_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_lock(run):
        holder = json.loads((run / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        code = f"from pathlib import Path; from atcon.train.rundir import run_lock\nwith run_lock(Path({str(run)!r})): pass"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert other.returncode != 0 and "RunLockedError" in other.stderr
    assert not (run / LOCK).exists()
    with pytest.raises(RuntimeError), run_lock(run):
        raise RuntimeError("boom")
    assert not (run / LOCK).exists()


def test_cli_says_who_holds_the_folder(
    tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from atcon.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(lock_of(os.getppid(), host="node-7"))
    args = ["train", "--data", str(tiny_voc), "--model", "small", "--image-size", "32", "--per-class", "2"]
    assert main([*args, "--epochs", "1", "--out", str(run), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "node-7" in err[0] and "Traceback" not in err[0]
