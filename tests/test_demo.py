"""The demo pipeline end to end on a tiny generated benchmark (a fake Fashion-MNIST copy, offline)."""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from atcon.demo import PRESETS, run_demo


def _write_fake_fashion_mnist(folder: Path, n: int = 240) -> None:
    """Bright random blobs on black, 10 labels, in the IDX layout of the real files."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    folder.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        cy, cx, r = rng.uniform(9, 19, n), rng.uniform(9, 19, n), rng.uniform(4, 9, n)
        images = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 < r[:, None, None] ** 2) * 200
        labels = np.arange(n) % 10
        for kind, arr in (("images-idx3", images.astype(np.uint8)), ("labels-idx1", labels.astype(np.uint8))):
            header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + arr.tobytes()))


@pytest.mark.parametrize("preset", ["small", "small-video"])
def test_demo_runs_end_to_end_and_resumes(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_fashion_mnist(tmp_path / "fmnist")
    monkeypatch.setenv("ATCON_FASHION_MNIST", str(tmp_path / "fmnist"))
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path / "data"))
    config = replace(
        PRESETS[preset],
        image_size=32,
        per_class=1,
        source_epochs=1,
        epochs=1,
        finetune_epochs=1,
        resamples=50,
        figures=2,
        workers=0,
        device="cpu",
        data_size=0.03,
    )
    out = tmp_path / "demo"
    summary = run_demo(config, out, progress=False)
    lines = summary["table"].splitlines()
    assert lines[2].startswith("| Baseline + Aug (ref.)") and lines[3].startswith(
        "| Baseline + Aug + Attention"
    )
    assert set(summary["seconds"]) == {
        "benchmark", "source pretraining", "supervised baseline", "consistency fine-tuning", "evaluation",
        "figures and report",
    }  # fmt: skip
    assert (out / "report.html").stat().st_size > 10_000  # figures are embedded
    assert json.loads((out / "demo.json").read_text())["config"]["data_size"] == 0.03
    for run in ("baseline", "finetuned"):
        assert (out / run / "checkpoints" / "best.pt").is_file()
    # Finished stages are reused: a second call trains nothing.
    stamp = (out / "finetuned" / "checkpoints" / "best.pt").stat().st_mtime_ns
    again = run_demo(config, out, progress=False)
    assert again["table"] == summary["table"]
    assert (out / "finetuned" / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
