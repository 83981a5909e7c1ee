"""One GPU session's speed measurements, in priority order, each section guarded and time-capped.

    PYTHONPATH=src python benchmarks/gpu_suite.py --out $OUT/gpu                  # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_suite.py --smoke                         # any device, checks the script

Sections (one that fails or runs out of time is recorded as such, and the next one runs):

1. ``env``: torch, CUDA, cuDNN, GPU name and memory, TF32 flags.
2. ``resnet50``: one optimizer step of consistency fine-tuning vs supervised training, ResNet-50,
   256 px, batch 32, fp32 and bf16, levers on and off (see ``consistency_step.py``): images/s,
   ratio, peak step memory of each side.
3. ``r3d_18``: the same for r3d_18, 16 frames of 112 px, batch 12, fewer variants.
4. ``depthwise``: efficientnet_b0, mobilenet_v3_large and (with timm) convnext_atto, 224 px,
   batch 32, fp32, before (``native_grouped``: PyTorch's own double backward of grouped
   convolutions) and after (the lean grouped path, the default), fold off and on.
5. ``commands``: shell commands (``--shell NAME=CMD``, or :data:`COMMANDS`), each with a timeout;
   wall time, exit status and output are recorded.
6. ``profile``: the top kernels of one consistency step (ResNet-50 bf16), fold off and on.
7. ``compile``: ``torch.compile`` of the supervised step, then an attempt on the consistency step.
8. ``demo``: ``atcon demo --full`` to its end (``--demo-timeout``), wall time of every stage.

``--skip`` leaves sections out, so one session can run the benchmarks and the next the demo::

    PYTHONPATH=src python benchmarks/gpu_suite.py --out $OUT/gpu --skip demo
    PYTHONPATH=src python benchmarks/gpu_suite.py --out $OUT/demo --budget 590 \\
        --skip resnet50,r3d_18,depthwise,profile,compile

Everything goes to ``--out`` (one JSON per measurement, ``summary.md``, logs) as soon as it is
measured, and a short table to stdout, flushed, so a run cut short keeps what it finished; a
recap of the key figures is printed last. ``--smoke`` runs every section on the same networks
with tiny inputs (batch 2, 32 px; r3d_18 2 frames of 16 px), one round each, the ``eager``
compile backend and a tiny demo (one epoch per stage, 3% of the benchmark): about a minute on
two CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consistency_step import build, compare, format_table, input_shape, parse_variants

# Shell commands for the "commands" section: (name, command, timeout in seconds); ``{out}`` is
# replaced by the output folder. Each must fit in what is left of the budget, e.g.
#   ("demo_full", "python -m atcon.cli demo --full --out {out}/demo_full", 240),
COMMANDS: list[tuple[str, str, float]] = []


@dataclass(frozen=True)
class Shape:
    """One network's benchmark shape and the variants compared at each precision."""

    model: str
    batch: int
    size: int
    frames: int
    variants: str
    precisions: tuple[str, ...] = ("none", "bf16")


@dataclass(frozen=True)
class Plan:
    resnet: Shape
    video: Shape
    depthwise: tuple[Shape, ...]
    warmup: int
    repeats: int
    builder: Callable[[str, int], nn.Module]
    compile_backend: str
    smoke: bool = False


RESNET_VARIANTS = "base,fold,channels_last,fold+channels_last,fold+channels_last+lean_conv,detach_mask"
VIDEO_VARIANTS = "base,fold,fold+channels_last,fold+lean_conv"
# Before (PyTorch's double backward of grouped convolutions) and after (the lean grouped path).
DEPTHWISE_VARIANTS = "native_grouped,base,fold+native_grouped,fold"
DEPTHWISE_MODELS = ("efficientnet_b0", "mobilenet_v3_large", "timm:convnext_atto")


FULL = Plan(
    Shape("resnet50", 32, 256, 16, RESNET_VARIANTS),
    Shape("r3d_18", 12, 112, 16, VIDEO_VARIANTS),
    tuple(Shape(m, 32, 224, 16, DEPTHWISE_VARIANTS, ("none",)) for m in DEPTHWISE_MODELS),
    warmup=3,
    repeats=10,
    builder=build,
    compile_backend="inductor",
)
SMOKE = Plan(
    Shape("resnet50", 2, 32, 2, RESNET_VARIANTS),
    Shape("r3d_18", 2, 16, 2, VIDEO_VARIANTS),
    tuple(Shape(m, 2, 32, 2, DEPTHWISE_VARIANTS, ("none",)) for m in DEPTHWISE_MODELS),
    warmup=0,
    repeats=1,
    builder=build,
    compile_backend="eager",
    smoke=True,
)


class SectionTimeout(BaseException):
    """A section's time cap; not an ``Exception``, so the benchmark's per-step handlers let it through."""


@contextlib.contextmanager
def time_cap(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (Unix; else no cap)."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise SectionTimeout(f"time cap of {seconds:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Suite:
    """Runs sections within a total budget and records each one as it finishes."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out, self.start, self.budget = out, time.monotonic(), budget
        out.mkdir(parents=True, exist_ok=True)
        self.summary = out / "summary.md"
        self.summary.write_text(f"# GPU suite ({time.strftime('%Y-%m-%d %H:%M:%S')})\n\n")
        self.recap: list[str] = []
        self.status: dict[str, str] = {}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        print(text, flush=True)
        with self.summary.open("a") as f:
            f.write(text + "\n")

    def save(self, name: str, data: object) -> None:
        (self.out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))

    def section(self, name: str, cap: float, fn: Callable[[], None], min_left: float = 20.0) -> None:
        """Run ``fn`` with at most ``cap`` seconds (less if the budget is shorter)."""
        left = self.left()
        if left < min_left:
            self.status[name] = f"skipped ({left:.0f} s of the budget left)"
            self.say(f"\n## {name}: {self.status[name]}")
            return
        limit = min(cap, left - 5)
        self.say(f"\n## {name} (cap {limit:.0f} s, {time.monotonic() - self.start:.0f} s elapsed)")
        t0 = time.monotonic()
        try:
            with time_cap(limit):
                fn()
            status = "ok"
        except SectionTimeout as e:
            status = f"stopped: {e}"
        except Exception as e:
            status = f"failed: {type(e).__name__}: {e}"
            (self.out / f"{name}.error.txt").write_text(traceback.format_exc())
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.status[name] = f"{status} in {time.monotonic() - t0:.0f} s"
        self.say(f"-> {name}: {self.status[name]}")

    def finish(self) -> None:
        self.say("\n## recap\n" + "\n".join(f"- {k}: {v}" for k, v in self.status.items()))
        self.say("\n".join(self.recap))
        self.say(f"done in {time.monotonic() - self.start:.0f} s; results in {self.out}")


def env_report(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    for mod in ("torchvision", "timm"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:
            info[mod] = f"unavailable ({type(e).__name__})"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": p.name,
            "gpu_memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}",
        }
    return info


def env_section(suite: Suite, device: torch.device) -> None:
    info = env_report(device)
    suite.save("env", info)
    suite.say("\n".join(f"- {k}: {v}" for k, v in info.items()))
    suite.recap.append(f"device: {info.get('gpu', device)}, torch {info['torch']}")


def benchmark_shape(
    suite: Suite,
    plan: Plan,
    shape: Shape,
    device: torch.device,
    per_precision: float,
    builder: Callable[[str, int], nn.Module] | None = None,
) -> None:
    """One :func:`compare` call per precision, saved and printed as soon as it is done."""
    for amp in shape.precisions:
        t0 = time.monotonic()
        rows = compare(
            shape.model,
            parse_variants(shape.variants, amp),
            batch=shape.batch,
            size=shape.size,
            frames=shape.frames,
            device=device,
            warmup=plan.warmup,
            repeats=plan.repeats,
            max_seconds=per_precision,
            builder=builder or plan.builder,
        )
        precision = "fp32" if amp == "none" else amp
        suite.save(f"{shape.model.replace(':', '_')}_{precision}", rows)
        dims = "x".join(str(n) for n in input_shape(shape.model, shape.batch, shape.size, shape.frames)[2:])
        suite.say(
            f"\n{shape.model} {dims} batch {shape.batch} {precision} "
            f"({rows[0]['rounds']} rounds, {time.monotonic() - t0:.0f} s):\n```\n{format_table(rows)}\n```"
        )
        for r in rows:
            suite.recap.append(
                f"{shape.model} {precision} {r['name']}: ratio {r['ratio']:.2f}x, "
                f"{r['consistency_img_s']:.0f} vs {r['supervised_img_s']:.0f} images/s, "
                f"peak {r['consistency_peak_gib']:.1f} vs {r['supervised_peak_gib']:.1f} GiB"
                + (f" ERROR {r['error']}" if r["error"] else "")
            )


def run_command(suite: Suite, name: str, command: str, timeout: float) -> dict[str, Any]:
    """Run one shell command (the placeholder section): wall time, exit status, output tail."""
    cmd = command.replace("{out}", str(suite.out))
    timeout = max(1.0, min(timeout, suite.left() - 10))
    log = suite.out / f"cmd_{name}.log"
    t0 = time.monotonic()
    with log.open("w") as f:
        try:
            rc: int | str = subprocess.run(
                cmd, shell=True, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            rc = f"timed out after {timeout:.0f} s"
    wall = time.monotonic() - t0
    tail = log.read_text(errors="replace")[-1500:]
    result = {"name": name, "command": cmd, "wall_s": round(wall, 1), "returncode": rc, "tail": tail}
    suite.save(f"cmd_{name}", result)
    suite.say(f"{name}: rc={rc} wall {wall:.0f} s (log {log.name})\n```\n{tail[-600:]}\n```")
    suite.recap.append(f"command {name}: rc={rc}, {wall:.0f} s")
    return result


def depthwise_section(suite: Suite, plan: Plan, device: torch.device, cap: float) -> None:
    """The depthwise networks before and after the lean grouped path; a network that cannot be
    built (timm not installed) is recorded and skipped."""
    per_model = cap / (1.3 * max(1, len(plan.depthwise)))
    for shape in plan.depthwise:
        try:
            benchmark_shape(suite, plan, shape, device, per_model, builder=build)
        except Exception as e:
            line = f"{shape.model}: not measured ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            suite.say(line)
            suite.recap.append(line)


def demo_section(suite: Suite, plan: Plan, timeout: float) -> None:
    """``atcon demo --full`` to its end in a subprocess (smoke: a tiny demo in this process)."""
    if plan.smoke:
        from dataclasses import replace

        from atcon.demo import PRESETS, run_demo

        os.environ.setdefault("ATCON_DATA_DIR", str(suite.out / "demo_data"))
        config = replace(
            PRESETS["small"],
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
        t0 = time.monotonic()
        summary = run_demo(config, suite.out / "demo_smoke", progress=False)
        seconds = {k: round(v, 1) for k, v in summary["seconds"].items()}
        suite.save("demo_smoke", {"wall_s": round(time.monotonic() - t0, 1), "seconds": seconds})
    else:
        out = suite.out / "demo_full"
        command = f"{sys.executable} -m atcon.cli demo --full --no-progress --out {out}"
        result = run_command(suite, "demo_full", command, timeout)
        if result["returncode"] != 0:
            raise RuntimeError(f"demo --full: rc={result['returncode']}")
        seconds = json.loads((out / "demo.json").read_text()).get("seconds", {})
    line = "demo stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    suite.say(line)
    suite.recap.append(line)


def commands_section(suite: Suite, commands: list[tuple[str, str, float]]) -> None:
    for name, command, timeout in commands:
        run_command(suite, name, command, timeout)


def profile_section(suite: Suite, plan: Plan, device: torch.device) -> None:
    """Top kernels of one bf16 consistency step of the 2D network, fold off and on."""
    from torch.profiler import ProfilerActivity, profile

    from atcon.consistency import ConsistencyConfig, attention_consistency

    shape = plan.resnet
    torch.manual_seed(0)
    model = plan.builder(shape.model, 20).to(device).eval()
    x = torch.randn(shape.batch, 3, shape.size, shape.size, device=device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    for fold in (False, True):
        config = ConsistencyConfig(fold_norm=fold)

        def step(config: ConsistencyConfig = config) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = attention_consistency(model, x, config).loss.mean()
            loss.backward()
            model.zero_grad(set_to_none=True)

        step()
        step()
        with profile(activities=activities) as prof:
            step()
            if cuda:
                torch.cuda.synchronize()
        table = prof.key_averages().table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=30
        )
        (suite.out / f"profile_fold{int(fold)}.txt").write_text(table)
        head = "\n".join(line[:150] for line in table.splitlines()[:16])
        suite.say(f"fold={fold} (full table in profile_fold{int(fold)}.txt)\n```\n{head}\n```")


def compile_section(suite: Suite, plan: Plan, device: torch.device) -> None:
    """Supervised step compiled vs eager (bf16); then an attempt at the consistency step on the
    compiled model (its double backward through the guided ReLUs is not expected to compile)."""
    shape = plan.resnet
    common: dict[str, Any] = {
        "batch": shape.batch,
        "size": shape.size,
        "frames": shape.frames,
        "device": device,
        "warmup": plan.warmup,
        "builder": plan.builder,
        "compile_backend": plan.compile_backend,
    }
    variants = parse_variants("base,compile", "bf16")
    rows = compare(
        shape.model, variants, repeats=plan.repeats, max_seconds=30, consistency_steps=False, **common
    )
    suite.save("compile_supervised", rows)
    for r in rows:
        line = f"supervised bf16 {r['name']}: {r['supervised_img_s']:.0f} images/s {r['error']}"
        suite.say(line)
        suite.recap.append(line)
    rows = compare(shape.model, parse_variants("fold+compile", "bf16"), repeats=1, **common)
    suite.save("compile_consistency", rows)
    suite.say(f"```\n{format_table(rows)}\n```")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="results folder (--smoke: a temporary one)")
    p.add_argument("--smoke", action="store_true", help="tiny networks, one round: checks the script")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole suite")
    p.add_argument("--resnet-cap", type=float, default=150.0, help="seconds for the ResNet-50 section")
    p.add_argument("--video-cap", type=float, default=100.0, help="seconds for the r3d_18 section")
    p.add_argument(
        "--resnet-variants", default=RESNET_VARIANTS, help="ResNet-50 variants (consistency_step.py syntax)"
    )
    p.add_argument("--video-variants", default=VIDEO_VARIANTS, help="r3d_18 variants")
    p.add_argument("--depthwise-cap", type=float, default=120.0, help="seconds for the depthwise section")
    p.add_argument("--demo-timeout", type=float, default=3600.0, help="seconds for atcon demo --full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shell", action="append", default=[], metavar="NAME=CMD", help="a command to run")
    p.add_argument("--shell-timeout", type=float, default=240.0)
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = p.parse_args()
    if args.out is None:
        if not args.smoke:
            p.error("--out is required (except with --smoke)")
        args.out = Path(tempfile.mkdtemp(prefix="gpu_suite_smoke_"))

    commands = list(COMMANDS)
    for spec in args.shell:
        name, sep, command = spec.partition("=")
        if not sep:
            p.error(f"--shell wants NAME=CMD, got {spec!r}")
        commands.append((name, command, args.shell_timeout))
    if args.smoke and not commands:
        commands = [("smoke_echo", f"{sys.executable} -c \"print('command section works')\"", 30.0)]

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as in training: fixed shapes, tuned kernels
    torch._logging.set_logs(dynamo=logging.ERROR)  # recompile warnings would flood the output
    plan = SMOKE if args.smoke else FULL
    plan = dataclasses.replace(
        plan,
        resnet=dataclasses.replace(plan.resnet, variants=args.resnet_variants),
        video=dataclasses.replace(plan.video, variants=args.video_variants),
    )
    scale = 4.0 if args.smoke else 1.0  # a smoke run checks, not measures: room for a shared CPU
    for cap in ("budget", "resnet_cap", "video_cap", "depthwise_cap"):
        setattr(args, cap, scale * getattr(args, cap))
    suite = Suite(args.out, args.budget)
    sections: list[tuple[str, float, Callable[[], None]]] = [
        ("env", 30 * scale, lambda: env_section(suite, device)),
        (
            "resnet50",
            args.resnet_cap,
            lambda: benchmark_shape(suite, plan, plan.resnet, device, args.resnet_cap / 2.4),
        ),
        (
            "r3d_18",
            args.video_cap,
            lambda: benchmark_shape(suite, plan, plan.video, device, args.video_cap / 2.4),
        ),
        ("depthwise", args.depthwise_cap, lambda: depthwise_section(suite, plan, device, args.depthwise_cap)),
        ("commands", 1e9, lambda: commands_section(suite, commands)),
        ("profile", 45 * scale, lambda: profile_section(suite, plan, device)),
        ("compile", 150 * scale, lambda: compile_section(suite, plan, device)),
        ("demo", 1e9, lambda: demo_section(suite, plan, args.demo_timeout)),
    ]
    skip = set(args.skip.split(","))
    for name, cap, fn in sections:
        if name not in skip and (name != "commands" or commands):
            suite.section(name, cap, fn)
    suite.finish()


if __name__ == "__main__":
    main()
