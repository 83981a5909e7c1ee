from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from atcon.commands import data as data_cmd
from atcon.data import Split
from atcon.data import benchmarks as bench


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atcon")
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture(autouse=True)
def tiny_source(
    monkeypatch: pytest.MonkeyPatch, fashion_source: Callable[..., tuple[np.ndarray, np.ndarray]]
) -> None:
    def fake(
        split: str = "train", root: object = None, download: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        images, labels = fashion_source(n_per_class=6)
        order = np.random.default_rng(1).permutation(len(labels))
        return images[order], labels[order]

    monkeypatch.setattr(bench, "load_fashion_mnist", fake)


def test_build_split_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cf"
    assert (
        run(["data", "build", "cluttered-fashion", "--out", str(out), "--size", "0.01", "--seed", "5"]) == 0
    )
    assert f"ready in {out}" in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["seed"] == 5

    split_file = tmp_path / "split.json"
    argv = [
        "data",
        "split",
        "voc",
        "--root",
        str(out),
        "--per-class",
        "1",
        "--seed",
        "0",
        "--out",
        str(split_file),
    ]
    assert run([*argv, "--val-size", "5", "--test-split", "test"]) == 0
    split = Split.load(split_file)
    assert len(split.val) == 5 and len(split.test) == 15 and split.per_class == 1
    assert "train" in capsys.readouterr().out

    assert run(["data", "info", str(out), "--split", "train,test"]) == 0
    table = capsys.readouterr().out
    assert "train (30)" in table and "test (15)" in table and "ankle_boot" in table


def test_clip_split_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    assert run(["data", "build", "fashion-events", "--out", str(out), "--size", "0.05"]) == 0
    split_file = tmp_path / "clips.json"
    argv = ["data", "split", "clips", "--manifest", str(out / "manifest.csv"), "--per-class", "1"]
    assert run([*argv, "--out", str(split_file)]) == 0
    split = Split.load(split_file)
    assert split.protocol == "subject-disjoint" and len(split.train) == 5
    capsys.readouterr()
    assert run(["data", "info", str(out)]) == 0
    assert "30 clips, 6 subjects, 5 classes" in capsys.readouterr().out


def test_errors_surface_as_exceptions_the_main_cli_prints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(
            [
                "data",
                "split",
                "voc",
                "--root",
                str(tmp_path / "nowhere"),
                "--per-class",
                "2",
                "--out",
                "x.json",
            ]
        )


def test_registered_in_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atcon.cli import main

    assert main(["data", "info", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_build_shortcut_fashion_with_its_options_and_describe_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sf"
    argv = [
        "data",
        "build",
        "shortcut-fashion",
        "--out",
        str(out),
        "--size",
        "0.01",
        "--rho",
        "0.8",
        "--cue",
        "marker",
    ]
    assert run(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rho"] == 0.8 and meta["cue"] == "marker" and meta["counts"]["train"] == 30
    capsys.readouterr()
    assert run(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "regions to avoid: 55 on 55 images" in text and "groups: aligned" in text  # 30 + 5 + 15 + 5
    # The cache folder is named by the options that differ from the defaults.
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path / "cache"))
    assert run(["data", "build", "shortcut-fashion", "--size", "0.01", "--rho", "0.5"]) == 0
    assert (tmp_path / "cache" / "shortcut-fashion-seed0-size0.01-rho0.5" / "manifest.csv").is_file()
    with pytest.raises(ValueError, match="--rho applies to shortcut-fashion only, not cluttered-fashion"):
        run(["data", "build", "cluttered-fashion", "--out", str(tmp_path / "cf"), "--rho", "0.9"])


@pytest.mark.parametrize("name", ["cluttered-fashion", "shortcut-fashion"])
def test_info_takes_a_builtin_name(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`atcon data info NAME` describes the benchmark `--data NAME` trains on (built if needed)."""
    import atcon.data

    real = atcon.data.build_benchmark
    built: list[str] = []

    def small(name: str, **kw: object) -> Path:  # the default build, at 1% of its size
        built.append(name)
        return real(name, out=tmp_path / name, size=0.01)

    monkeypatch.setattr(atcon.data, "build_benchmark", small)
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert run(["data", "info", name]) == 0
    out = capsys.readouterr().out
    assert built == [name]
    assert str(tmp_path / name) in out and "ankle_boot" in out
    assert "not found" not in out
