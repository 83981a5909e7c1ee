"""Time one optimizer step of supervised training vs attention-consistency fine-tuning.

Same model, batch and device, side by side in one process: every step of every variant runs
once per round, rounds interleaved, so background load hits all alike; times are medians over
the rounds, ratios medians of the per-round ratios. A variant is a ``+``-joined set of levers (``base`` = none):

    fold            eval-mode BatchNorm folded into the convolutions (consistency passes only)
    lean_conv       convolutions with the direct second-order backward (consistency passes only)
    native_grouped  grouped / depthwise convolutions with PyTorch's own double backward: the state
                    before the lean grouped path became the default (``lean_grouped_conv=False``)
    channels_last   model and input in channels-last memory format
    bf16, fp16      autocast
    detach_mask     stop the gradient at the mask (cheaper, not the full method; for reference)
    compile         torch.compile the model (a failure is reported, not raised)

Each variant's consistency step is compared with the supervised step of the same memory format,
precision and compilation. Prints a table (images/s, ratio, speed-up over ``base``, and on CUDA the
peak memory a step adds on top of what was allocated before it) and optionally writes JSON.

    python benchmarks/consistency_step.py --threads 1 --variants base,fold,channels_last,bf16,detach_mask
    python benchmarks/consistency_step.py --model resnet50 --batch 32 --size 256 --device cuda \\
        --variants base,fold,channels_last,fold+channels_last,bf16,fold+channels_last+bf16 --json out.json
    python benchmarks/consistency_step.py --model timm:efficientnet_b0 --batch 4 --size 96 \\
        --threads 1 --variants native_grouped,base,fold+native_grouped,fold

``--model`` takes any atcon model name (:func:`atcon.models.model_spec`): the curated ones, any
torchvision classification or video model, or ``timm:NAME``; weights are random.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.models import build_model, model_spec


def build(name: str, classes: int) -> nn.Module:
    """The atcon model ``name`` (curated, torchvision or ``timm:NAME``) with random weights."""
    return build_model(name, classes)


LEVERS = ("fold", "lean_conv", "native_grouped", "channels_last", "bf16", "fp16", "detach_mask", "compile")


@dataclass(frozen=True)
class Variant:
    """One combination of levers."""

    name: str
    fold: bool = False
    lean_conv: bool = False
    native_grouped: bool = False
    channels_last: bool = False
    amp: str = "none"
    detach_mask: bool = False
    compile: bool = False

    @property
    def setting(self) -> tuple[bool, str, bool]:
        """What the supervised step shares with this variant: memory format, precision, compilation."""
        return self.channels_last, self.amp, self.compile


def parse_variants(spec: str, amp: str = "none", detach_mask: bool = False) -> list[Variant]:
    """``"base,fold,fold+bf16"`` -> variants; ``amp`` and ``detach_mask`` are every variant's defaults."""
    out = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        levers = set(name.split("+")) - {"base"}
        unknown = levers - set(LEVERS)
        if unknown:
            raise SystemExit(f"unknown lever(s) {sorted(unknown)} in variant {name!r}; choose from {LEVERS}")
        precision = "bf16" if "bf16" in levers else "fp16" if "fp16" in levers else amp
        out.append(
            Variant(
                name=name,
                fold="fold" in levers,
                lean_conv="lean_conv" in levers,
                native_grouped="native_grouped" in levers,
                channels_last="channels_last" in levers,
                amp=precision,
                detach_mask=detach_mask or "detach_mask" in levers,
                compile="compile" in levers,
            )
        )
    return out


@dataclass
class Timing:
    """Median seconds per step, peak step memory (GiB above what was allocated before; CUDA only)."""

    seconds: list[float] = field(default_factory=list)
    peak_gib: float = float("nan")
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def interleaved(
    steps: dict[str, Callable[[], None]],
    device: torch.device,
    warmup: int,
    repeats: int,
    max_seconds: float = float("inf"),
    clock: str = "wall",
) -> dict[str, Timing]:
    """Run each step once per round (warm-up rounds untimed); a step that raises is dropped.

    Stops early, after at least one timed round, once ``max_seconds`` have passed. ``clock="cpu"``
    times the process's CPU time instead of wall time: on a CPU shared with other jobs it is far
    steadier (with one thread it is the step's own compute time).
    """
    cuda = device.type == "cuda"
    now = time.process_time if clock == "cpu" else time.perf_counter
    out = {k: Timing() for k in steps}
    live = dict(steps)
    start = time.perf_counter()

    def once(name: str, timed: bool) -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        t0 = now()
        try:
            live[name]()
            if cuda:
                torch.cuda.synchronize()
        except Exception as e:  # OOM or an unsupported lever: report it, keep the others
            out[name].error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            del live[name]
            if cuda:
                torch.cuda.empty_cache()
            return
        if timed:
            out[name].seconds.append(now() - t0)
            if cuda:
                peak = (torch.cuda.max_memory_allocated() - before) / 2**30
                out[name].peak_gib = (
                    peak if out[name].peak_gib != out[name].peak_gib else max(peak, out[name].peak_gib)
                )

    for r in range(warmup + repeats):
        for name in list(live):
            once(name, timed=r >= warmup)
        if r >= warmup and time.perf_counter() - start > max_seconds:
            break
    return out


def paired(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a / b`` for steps timed in the same rounds: load that drifts from
    round to round cancels out. The ratio of the medians when their rounds differ."""
    if a.seconds and len(a.seconds) == len(b.seconds):
        return statistics.median(x / y for x, y in zip(a.seconds, b.seconds))
    return a.median / b.median


def input_shape(model: str, batch: int, size: int, frames: int) -> tuple[int, ...]:
    """``(B, 3, H, W)``, or ``(B, 3, T, H, W)`` for a video model."""
    return (batch, 3, frames, size, size) if model_spec(model).video else (batch, 3, size, size)


def compare(
    model_name: str,
    variants: list[Variant],
    *,
    batch: int,
    size: int,
    frames: int = 16,
    classes: int = 20,
    device: torch.device,
    warmup: int = 2,
    repeats: int = 7,
    max_seconds: float = float("inf"),
    clock: str = "wall",
    builder: Callable[[str, int], nn.Module] = build,
    consistency_steps: bool = True,
    compile_backend: str = "inductor",
) -> list[dict[str, object]]:
    """Time every variant's consistency step and the matching supervised steps in one process.

    ``consistency_steps=False`` times the supervised steps only (their columns alone are filled).
    ``compile_backend`` is the ``torch.compile`` backend of ``compile`` variants.

    Returns:
        One row per variant (name, levers, ms and images/s of both steps, ratio, speed-up over the
        first variant, peak GiB of both, errors).
    """
    torch.manual_seed(0)
    base_model = builder(model_name, classes).to(device)
    shape = input_shape(model_name, batch, size, frames)
    x0 = torch.randn(shape, device=device)
    y = (torch.rand(batch, classes, device=device) < 0.2).float()
    bce = nn.BCEWithLogitsLoss()
    # One model (and optimizer) per memory format and compilation; all start from the same weights.
    models: dict[tuple[bool, bool], tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.Tensor]] = {}

    def model_for(v: Variant) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.Tensor]:
        key = (v.channels_last, v.compile)
        if key not in models:
            m = copy.deepcopy(base_model)
            x = x0
            if v.channels_last:
                fmt = torch.channels_last_3d if x0.ndim == 5 else torch.channels_last
                m, x = m.to(memory_format=fmt), x0.contiguous(memory_format=fmt)
            run: nn.Module = torch.compile(m, backend=compile_backend) if v.compile else m  # type: ignore[assignment]
            models[key] = (m, run, torch.optim.Adam(m.parameters(), lr=1e-5), x)
        return models[key]

    def autocast(amp: str) -> torch.autocast:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)
        return torch.autocast(device.type, dtype=dtype, enabled=amp != "none")

    def supervised(v: Variant) -> Callable[[], None]:
        _, run, opt, x = model_for(v)

        def step() -> None:
            run.train()
            opt.zero_grad(set_to_none=True)
            with autocast(v.amp):
                loss = bce(run(x), y)
            loss.backward()
            opt.step()

        return step

    def consistency(v: Variant) -> Callable[[], None]:
        _, run, opt, x = model_for(v)
        config = ConsistencyConfig(
            fold_norm=v.fold,
            lean_conv_grad=v.lean_conv,
            lean_grouped_conv=not v.native_grouped,
            detach_mask=v.detach_mask,
        )

        def step() -> None:
            run.eval()  # normalisation frozen, as in consistency fine-tuning
            opt.zero_grad(set_to_none=True)
            with autocast(v.amp):
                loss = attention_consistency(run, x, config).loss.mean()
            loss.backward()
            opt.step()

        return step

    steps: dict[str, Callable[[], None]] = {}
    sup_key = {}
    for v in variants:
        levers = [v.amp] if v.amp != "none" else []
        levers += ["channels_last"] * v.channels_last + ["compile"] * v.compile
        sup_key[v.name] = "supervised " + "+".join(levers or ["base"])
        steps.setdefault(sup_key[v.name], supervised(v))
        if consistency_steps:
            steps["consistency " + v.name] = consistency(v)
    timings = interleaved(steps, device, warmup, repeats, max_seconds, clock)

    rows: list[dict[str, object]] = []
    none = Timing()
    ref = timings.get("consistency " + variants[0].name, none) if variants else none
    for v in variants:
        sup, con = timings[sup_key[v.name]], timings.get("consistency " + v.name, none)
        rows.append(
            {
                **asdict(v),
                "model": model_name,
                "batch": batch,
                "input": list(shape[1:]),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "clock": clock,
                "supervised_ms": sup.median * 1e3,
                "consistency_ms": con.median * 1e3,
                "supervised_img_s": batch / sup.median,
                "consistency_img_s": batch / con.median,
                "ratio": paired(con, sup),
                "speedup_vs_first": paired(ref, con),
                "supervised_peak_gib": sup.peak_gib,
                "consistency_peak_gib": con.peak_gib,
                "rounds": len(con.seconds or sup.seconds),
                "supervised_s": [round(t, 4) for t in sup.seconds],
                "consistency_s": [round(t, 4) for t in con.seconds],
                "error": "; ".join(e for e in (sup.error, con.error) if e),
            }
        )
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width table of :func:`compare`'s rows."""
    head = (
        f"{'variant':32s} {'sup ms':>8s} {'con ms':>8s} {'sup img/s':>9s} {'con img/s':>9s} "
        f"{'ratio':>6s} {'speedup':>7s} {'sup GiB':>7s} {'con GiB':>7s}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['name']!s:32s} {r['supervised_ms']:8.1f} {r['consistency_ms']:8.1f} "
            f"{r['supervised_img_s']:9.1f} {r['consistency_img_s']:9.1f} {r['ratio']:5.2f}x "
            f"{r['speedup_vs_first']:6.2f}x {r['supervised_peak_gib']:7.2f} {r['consistency_peak_gib']:7.2f}"
            + (f"  ERROR {r['error']}" if r["error"] else "")
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=16, help="clip length for video models")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="every variant's default")
    p.add_argument("--variants", default="base,fold", help="comma-separated, levers joined by '+'")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--max-seconds", type=float, default=float("inf"), help="stop timing after this long")
    p.add_argument("--detach-mask", action="store_true", help="every variant's default")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (steadier on a shared CPU)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    variants = parse_variants(args.variants, args.amp, args.detach_mask)
    rows = compare(
        args.model,
        variants,
        batch=args.batch,
        size=args.size,
        frames=args.frames,
        classes=args.classes,
        device=device,
        warmup=args.warmup,
        repeats=args.repeats,
        max_seconds=args.max_seconds,
        clock=args.clock,
    )
    print(
        f"device={device} model={args.model} batch={args.batch} size={args.size} "
        f"threads={torch.get_num_threads()} clock={args.clock} torch={torch.__version__}; median of {rows[0]['rounds']} rounds; "
        "ratio = consistency / supervised step time (same format and precision); speedup over the "
        f"first variant's consistency step"
    )
    print(format_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
