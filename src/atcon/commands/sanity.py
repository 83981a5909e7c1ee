"""``atcon sanity``: the cascading parameter-randomisation test (Adebayo et al. 2018) of a checkpoint.

Grad-CAM, Guided Backprop and the consistency mask of the first ``--n`` items of the run's test
(or validation) set are compared, after each step of re-initialising the network from the top
block down, with those of the trained network (see :mod:`atcon.evaluate.sanity`). Writes
``sanity.json``, ``sanity.md``, ``sanity.png`` and ``report.html`` to ``--out``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from atcon.commands._config import Group, add_settings, read_settings


@dataclass(frozen=True)
class SanitySettings:
    """Which items ``atcon sanity`` checks, and how (its flags and TOML keys).

    Attributes:
        split: Which items: the run's test or validation set.
        n: Number of items, the first of the split.
        seed: Seed of the re-initialisations (step k uses seed + k).
    """

    split: Literal["test", "val"] = "test"
    n: int = 16
    seed: int = 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sanity",
        help="parameter-randomisation sanity check (Adebayo et al. 2018) of Grad-CAM, Guided Backprop, mask",
        description="Re-initialise the checkpoint's blocks cumulatively from the output down and, after each "
        "step, compare Grad-CAM, Guided Backprop and the consistency mask with the trained model's maps "
        "(Spearman rank correlation and SSIM per item; same items, same target classes: the trained "
        "model's top-1). Maps that stay similar do not depend on what the model learned. Writes "
        "sanity.json, sanity.md, sanity.png and report.html to --out.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint (e.g. RUN/checkpoints/best.pt)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/sanity)")
    add_settings(p, Group(SanitySettings), title="atcon sanity settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atcon import report
    from atcon.data import collate
    from atcon.devices import resolve_device
    from atcon.evaluate.sanity import cascading_randomization
    from atcon.results_io import write_json, write_markdown
    from atcon.trained_models import checkpoint_dataset, load_model
    from atcon.viz import sanity_figure, save_figure

    (opts,) = read_settings(args, Group(SanitySettings))
    if opts.n < 1:
        raise ValueError(f"--n must be >= 1, got {opts.n}")
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint)
    dataset = checkpoint_dataset(loaded, opts.split)
    n = min(opts.n, len(dataset))  # type: ignore[arg-type]
    if n < 1:
        raise ValueError(f"the {opts.split} set of {loaded.path} is empty")
    x, _ = collate([dataset[i] for i in range(n)])
    print(f"sanity check of {loaded.name} ({loaded.path}) on {n} {opts.split} items, device {device} ...")
    result = cascading_randomization(
        loaded.model.to(device), x.to(device), target_layer=loaded.target_layer, seed=opts.seed
    )
    table = result.to_markdown()
    note = (
        f"Mean over {n} {opts.split} items of the similarity to the trained model's maps (Grad-CAM at "
        f"`{result.layer}`, ReLU'd and upsampled; Guided Backprop as sum of |GB| over channels; the "
        "consistency mask of it). Each row re-initialises one more block, from the top down (seeds "
        f"{opts.seed}+step); target classes stay the trained model's top-1. A map that passes the check "
        "drops towards 0 as the weights are randomised."
    )
    print()
    print(table)
    print(note)

    out: Path = args.out or (loaded.run_dir / "sanity")
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "checkpoint": str(loaded.path),
        "checkpoint_sha256": loaded.sha256,
        "model_name": loaded.checkpoint["model_name"],
        "split": opts.split,
        "classes": list(loaded.classes),
        **result.to_dict(),
    }
    write_json(out / "sanity.json", info, newline=True)
    write_markdown(out / "sanity.md", f"# Sanity check: {loaded.name}\n\n{table}\n\n{note}\n")
    png = save_figure(sanity_figure(result), out / "sanity.png")
    html = report.write_report(
        out / "report.html",
        f"atcon sanity check: {loaded.name}",
        [
            report.text(
                "Cascading model-parameter randomisation (Adebayo et al., 2018, *Sanity checks for saliency "
                "maps*): the maps of the partly re-initialised network are compared with those of the trained "
                "network, for the same items and target classes. Similarity that stays high means the map "
                "reflects the input more than the learned weights."
            ),
            report.table(table, "Similarity to the trained model's maps", caption=note),
            report.figure(png, "Similarity per randomisation step", caption="Band: +-1 std over items."),
            report.text(f"`{loaded.path}` (sha256 `{loaded.sha256[:16]}...`)", "Checkpoint"),
        ],
        subtitle=f"{n} {opts.split} items, seed {opts.seed}",
    )
    print(f"\nresults: {out / 'sanity.json'}, {out / 'sanity.md'}, {png}\nreport:  {html}")
    return 0
