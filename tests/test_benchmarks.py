"""The speed benchmarks: variant parsing, interleaved timing, and the GPU suite's smoke run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atcon.models import SmallResNet

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import consistency_step as cs  # noqa: E402
import gpu_suite  # noqa: E402


def test_parse_variants() -> None:
    base, folded, mixed = cs.parse_variants("base, fold ,fold+channels_last+bf16", detach_mask=False)
    assert base == cs.Variant("base")
    assert folded == cs.Variant("fold", fold=True)
    assert mixed == cs.Variant("fold+channels_last+bf16", fold=True, channels_last=True, amp="bf16")
    assert cs.parse_variants("base", amp="bf16", detach_mask=True)[0].setting == (False, "bf16", False)
    with pytest.raises(SystemExit, match="unknown lever"):
        cs.parse_variants("base,fold+turbo")


def test_interleaved_drops_a_failing_step_and_stops_on_time() -> None:
    calls: list[str] = []

    def ok() -> None:
        calls.append("ok")

    def bad() -> None:
        calls.append("bad")
        raise RuntimeError("out of memory")

    out = cs.interleaved({"ok": ok, "bad": bad}, torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["ok", "bad", "ok", "ok", "ok"]  # bad dropped after its first failure
    assert len(out["ok"].seconds) == 3 and out["bad"].seconds == []
    assert out["bad"].error == "RuntimeError: out of memory"
    out = cs.interleaved({"ok": ok}, torch.device("cpu"), warmup=0, repeats=50, max_seconds=0.0)
    assert len(out["ok"].seconds) == 1  # at least one timed round, then the time cap


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    a, b = cs.Timing([2.0, 12.0, 3.0]), cs.Timing([1.0, 3.0, 2.0])
    assert cs.paired(a, b) == 2.0  # rounds: 2, 4, 1.5 (the ratio of the medians would be 1.5)
    assert cs.paired(cs.Timing([4.0, 1.0]), cs.Timing([2.0])) == 2.5 / 2.0  # unequal rounds


def test_compare_rows() -> None:
    rows = cs.compare(
        "small",
        cs.parse_variants("base,fold,detach_mask"),
        batch=2,
        size=16,
        device=torch.device("cpu"),
        warmup=0,
        repeats=1,
        builder=lambda _name, classes: SmallResNet(classes, width=4),
    )
    assert [r["name"] for r in rows] == ["base", "fold", "detach_mask"]
    for r in rows:
        assert r["error"] == "" and r["rounds"] == 1
        assert r["ratio"] == pytest.approx(r["consistency_ms"] / r["supervised_ms"])
        assert r["consistency_img_s"] == pytest.approx(2e3 / r["consistency_ms"])
    assert rows[0]["supervised_ms"] == rows[1]["supervised_ms"]  # one supervised step per setting
    assert rows[0]["speedup_vs_first"] == 1.0
    assert "fold" in cs.format_table(rows)


def test_time_cap_passes_through_step_handlers() -> None:
    def spin() -> None:
        while True:
            time.sleep(0.001)

    with pytest.raises(gpu_suite.SectionTimeout), gpu_suite.time_cap(0.05):
        out = cs.interleaved({"spin": spin}, torch.device("cpu"), warmup=0, repeats=1)
    assert "out" not in locals()  # the step handler did not swallow the time cap


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~45 s alone on 2 cores; a loaded machine can take several times that
def test_gpu_suite_smoke_run(tmp_path: Path) -> None:
    """Every section of the GPU script runs (tiny networks, CPU), so the GPU call cannot fail on a typo."""
    out = tmp_path / "suite"
    env = {"PYTHONPATH": str(BENCHMARKS.parent / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--out", str(out), "--smoke", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=840,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for section in ("env", "resnet50", "r3d_18", "depthwise", "commands", "profile", "compile", "demo"):
        assert f"-> {section}: ok" in proc.stdout, section
    depthwise = ["efficientnet_b0_fp32", "mobilenet_v3_large_fp32"]
    depthwise += ["timm_convnext_atto_fp32"] * (importlib.util.find_spec("timm") is not None)
    for name in ("resnet50_fp32", "resnet50_bf16", "r3d_18_fp32", "r3d_18_bf16", *depthwise):
        rows = json.loads((out / f"{name}.json").read_text())
        assert rows and all(r["error"] == "" and r["ratio"] > 0 for r in rows), name
    assert [r["name"] for r in json.loads((out / "efficientnet_b0_fp32.json").read_text())] == [
        "native_grouped", "base", "fold+native_grouped", "fold"
    ]  # fmt: skip
    assert set(json.loads((out / "demo_smoke.json").read_text())["seconds"]) >= {"evaluation"}
    assert json.loads((out / "env.json").read_text())["torch"] == torch.__version__
    assert json.loads((out / "cmd_smoke_echo.json").read_text())["returncode"] == 0
    assert (out / "profile_fold1.txt").stat().st_size > 0
    assert "## recap" in (out / "summary.md").read_text()
