"""Per-run cost of an experiment: shared decoded data vs. building and decoding it for every run.

Times short runs (``--epochs`` epochs at ``--per-class`` samples per class, then the test-set
evaluation) through :class:`atcon.experiments.runner.Store`, in two modes in one process:

* ``fresh``: a new store per run and an emptied decoded-file store (:mod:`atcon.data.decoded`),
  so every run builds its datasets and decodes its files again;
* ``shared``: one store for all runs, as ``atcon experiment`` does: datasets are built and files
  decoded once, later runs reuse them.

The first ``shared`` run pays for the decoding; the rest show the per-run overhead left.

    python benchmarks/experiment_overhead.py                          # cluttered-fashion, small @ 64
    python benchmarks/experiment_overhead.py --data fashion-events --model small3d
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from atcon.data import decoded
from atcon.experiments.runner import Run, Store
from atcon.train.config import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="cluttered-fashion")
    p.add_argument("--model", default="small")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--per-class", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--runs", type=int, default=4, help="runs per mode")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    base = TrainConfig(
        data=args.data,
        model=args.model,
        image_size=args.image_size,
        per_class=args.per_class,
        epochs=args.epochs,
        batch_size=4,
        device=args.device,
    )
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {"fresh": [], "shared": []}
        shared = Store(Path(tmp) / "shared", device=args.device, n_resamples=100, progress=False)
        for mode in ("fresh", "shared"):
            decoded.clear()
            for i in range(args.runs):
                if mode == "fresh":
                    decoded.clear()  # nothing decoded survives the run before
                store = (
                    shared
                    if mode == "shared"
                    else Store(Path(tmp) / f"fresh{i}", device=args.device, n_resamples=100, progress=False)
                )
                run = Run(mode, base.replace(seed=100 * i + (mode == "fresh")))
                start = time.perf_counter()
                store.get(run)
                times[mode].append(time.perf_counter() - start)
        print(
            f"{args.data}, {args.model} @ {args.image_size}, {args.per_class}/class, {args.epochs} epoch(s) + test eval"
        )
        for mode, t in times.items():
            rest = t[1:] or t
            print(f"  {mode:6s}: first run {t[0]:.2f} s, later runs median {statistics.median(rest):.2f} s")
        ratio = statistics.median(times["fresh"][1:] or times["fresh"]) / statistics.median(
            times["shared"][1:] or times["shared"]
        )
        print(f"  fresh / shared (later runs): {ratio:.2f}x")


if __name__ == "__main__":
    main()
