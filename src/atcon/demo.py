"""The whole pipeline on a built-in benchmark, in one call: ``atcon demo``.

1. build the benchmark (cached);
2. source-pretrain a network (cached; stands in for ImageNet / Kinetics weights, see
   :mod:`atcon.train.source`);
3. supervised baseline at a few samples per class (with augmentation, as the paper's
   "Baseline + Aug");
4. unsupervised attention-consistency fine-tuning of the baseline on the same training
   samples, without their labels (model selection on validation, the starting model included);
5. evaluation of both on the test set: F1, mAP, Grad-CAM IoU and pointing game with bootstrap
   CIs, paired tests and stars;
6. figures and a self-contained HTML report.

Presets: ``small`` fits a 2-core CPU in minutes; ``full`` is the paper-sized run for a GPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from atcon._json import to_json
from atcon.results_io import write_json, write_markdown


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of a demo run (see :data:`PRESETS`); each field is also an ``atcon demo`` flag.

    The CPU image preset's learning rates (1e-4, fine-tuning 2e-5) were chosen on the validation
    set, where 1e-3 overfits the few samples within a few epochs and 1e-4 for fine-tuning ends in
    a degenerate, perfectly "consistent" model.

    Attributes:
        benchmark: Built-in benchmark the demo builds and trains on.
        model: Architecture of every run.
        image_size: Input size in pixels (clips: frame size).
        per_class: Labeled training samples per class.
        source_epochs: Epochs of source pretraining (supervised on single objects for images,
            SimCLR for clips).
        epochs: Epochs of the supervised few-shot baseline.
        lr: Supervised learning rate (unset: the paper's 1e-3).
        finetune_epochs: Epochs of consistency fine-tuning.
        finetune_lr: Its learning rate.
        pool: Fine-tune on an unlabeled pool of this many training-pool items (0: the labeled
            training samples, without their labels).
        anchor_weight: Collapse guard of the fine-tuning (prediction anchor weight; 0: off).
        select: Which fine-tuning checkpoint is kept: labels (best validation metric), last, or
            label-free.
        finetune_eval_every: Evaluate fine-tuning every this many steps (0: every epoch).
        batch_size: Training batch size.
        resamples: Bootstrap resamples of the test-set intervals and paired tests.
        figures: Test images shown with their attention maps in the report.
        seed: Seed of the benchmark, the split and every run.
        device: auto, cpu, cuda or cuda:N.
        workers: DataLoader worker processes.
        data_size: Share of the benchmark's images generated (1.0: all).
    """

    benchmark: str = "cluttered-fashion"
    model: str = "small"
    image_size: int = 64
    per_class: int = 4
    source_epochs: int = 24
    epochs: int = 20
    lr: float | None = 1e-4
    finetune_epochs: int = 10
    finetune_lr: float = 2e-5
    pool: int = 0
    anchor_weight: float = 0.0
    select: Literal["labels", "last", "label-free"] = "labels"
    finetune_eval_every: int = 0
    batch_size: int = 4
    resamples: int = 1000
    figures: int = 4
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    data_size: float = 1.0


PRESETS: dict[str, DemoConfig] = {
    "small": DemoConfig(),
    "small-video": DemoConfig(
        benchmark="fashion-events",
        model="small3d",
        image_size=64,
        per_class=8,
        source_epochs=8,
        epochs=15,
        lr=None,
        finetune_epochs=5,
        finetune_lr=1e-4,
        batch_size=8,
    ),
    "full": DemoConfig(
        model="resnet50",
        image_size=256,
        per_class=8,
        source_epochs=10,
        epochs=60,
        lr=None,
        finetune_epochs=20,
        finetune_lr=5e-6,
        batch_size=4,
        workers=8,
    ),
    "full-video": DemoConfig(
        benchmark="fashion-events",
        model="r3d_18",
        image_size=80,
        per_class=16,
        source_epochs=50,
        epochs=60,
        lr=None,
        finetune_epochs=20,
        finetune_lr=5e-6,
        batch_size=12,
        workers=8,
    ),
}


def run_demo(config: DemoConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run the demo pipeline into ``out``; returns the table, timings and paths.

    Finished stages are reused when ``out`` already holds them (a killed demo resumes).

    One function on purpose: the demo's stages in the order they run, each a timed block over
    library calls, sharing the run folders and the base config.
    """
    from atcon import report
    from atcon.data import build_benchmark
    from atcon.devices import resolve_device
    from atcon.evaluate import EvalSpec, compare, comparison_table, results_table
    from atcon.explain import attention_examples
    from atcon.train.config import TrainConfig
    from atcon.train.run import train
    from atcon.train.source import source_checkpoint
    from atcon.trained_models import checkpoint_dataset, evaluate_checkpoint, load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def stage(name: str) -> Any:
        class _Timer:
            def __enter__(self) -> None:
                self.start = time.perf_counter()
                print(f"[demo] {name} ...", flush=True)

            def __exit__(self, *exc: object) -> None:
                times[name] = time.perf_counter() - self.start
                print(f"[demo] {name}: {times[name]:.0f} s", flush=True)

        return _Timer()

    c = config
    with stage("benchmark"):
        build_benchmark(c.benchmark, seed=c.seed, size=c.data_size)
    with stage("source pretraining"):
        source = source_checkpoint(
            c.benchmark,
            c.model,
            image_size=c.image_size,
            epochs=c.source_epochs,
            seed=c.seed,
            size=c.data_size,
            device=c.device,
            workers=c.workers,
            progress=progress,
        )
    base = TrainConfig(
        data=c.benchmark,
        model=c.model,
        image_size=c.image_size,
        per_class=c.per_class,
        split_seed=c.seed,
        data_seed=c.seed,
        data_size=c.data_size,
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        seed=c.seed,
        device=c.device,
        workers=c.workers,
        weights=str(source),
        new_head=True,
        augment=True,
    )

    def run(name: str, cfg: TrainConfig) -> Path:
        run_dir = out / name
        done = (run_dir / "summary.json").is_file()
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if not done:
            train(cfg, run_dir, resume=resume, progress=progress)
        return run_dir / "checkpoints" / "best.pt"

    with stage("supervised baseline"):
        baseline = run("baseline", base)
    with stage("consistency fine-tuning"):
        finetuned = run(
            "finetuned",
            replace(
                base,
                strategy="finetune",
                weights=str(baseline),
                new_head=False,
                epochs=c.finetune_epochs,
                lr=c.finetune_lr,
                unlabeled=f"pool:{c.pool}" if c.pool else None,
                anchor_weight=c.anchor_weight,
                select=c.select,
                eval_every=c.finetune_eval_every,
            ),
        )
    spec = EvalSpec(
        n_resamples=c.resamples, seed=c.seed, device=resolve_device(c.device), num_workers=c.workers
    )
    with stage("evaluation"):
        models = [load_model(baseline, "Baseline + Aug"), load_model(finetuned, "Baseline + Aug + Attention")]
        test = checkpoint_dataset(models[0], "test")
        results = [evaluate_checkpoint(m, test, spec) for m in models]
        comparison = compare(results[1], results[0])
        columns = (
            ["f1_macro", "map", "iou", "pointing"]
            if results[0].localization is not None
            else ["f1_macro", "map"]
        )
        columns = [k for k in columns if k in results[0].metrics]
        table = results_table(results, reference=results[0].name, columns=columns)
    with stage("figures and report"):
        fig = attention_examples(models, test, c.figures)
        protocol = results[0].protocol
        path = report.write_report(
            out / "report.html",
            f"atcon demo: {c.benchmark}, {c.model}, {c.per_class} samples per class",
            [
                report.text(
                    f"Source-pretrained `{c.model}` ({source.name}), supervised baseline with augmentation on "
                    f"{c.per_class} samples per class, then unsupervised attention-consistency fine-tuning on the "
                    "same samples without labels. Test-set figures with 95% bootstrap intervals; `*`: paired "
                    "bootstrap p < 0.05 against the baseline."
                ),
                report.table(table, "Results on the test set"),
                report.table(comparison_table(comparison), "Paired comparison"),
                report.protocol(protocol),
                report.figure(
                    fig,
                    "Attention maps",
                    "Input with ground truth; for each model: Grad-CAM, Guided "
                    "Backprop and the consistency mask.",
                ),
                report.training_curves({"baseline": out / "baseline", "fine-tuned": out / "finetuned"}),
                report.text(
                    to_json({k: round(v, 1) for k, v in times.items()}, indent=None),
                    "Stage times (s)",
                    preformatted=True,
                ),
            ],
        )
    summary = {
        "config": asdict(c),
        "table": table,
        "comparison": comparison_table(comparison),
        "protocol": str(protocol),
        "seconds": times,
        "report": str(path),
    }
    write_json(out / "demo.json", summary)
    write_markdown(
        out / "results.md", table + "\n\n" + comparison_table(comparison) + "\n\n" + str(protocol) + "\n"
    )
    return summary
