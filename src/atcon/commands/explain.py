"""``atcon explain``: attention maps of trained checkpoints for images, clips or test items.

Per input: a figure with the input, the Grad-CAM overlay, Guided Backprop, the consistency mask
and score of each checkpoint (side by side with the ground truth and each model's prediction when
two are given, as in the paper's Figures 1-2); clips also get a per-frame grid and an animated
GIF. The raw signed maps go to ``maps.pt`` with their metadata.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from atcon.commands._common import slug
from atcon.commands._config import Group, add_settings, read_settings


@dataclass(frozen=True)
class ExplainSettings:
    """What ``atcon explain`` draws (its flags and TOML keys).

    Attributes:
        target: Class of the maps: each model's top-1 prediction (pred), or the first
            ground-truth class (gt).
        frames: Frames shown in the per-frame grid of clips.
    """

    target: Literal["pred", "gt"] = "pred"
    frames: int = 8


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "explain",
        help="attention-map figures (Grad-CAM, Guided Backprop, mask, consistency) of checkpoints",
        description="For each input, draw the input, Grad-CAM overlay, Guided Backprop, consistency mask and "
        "score of a checkpoint (with --compare, of two checkpoints side by side, with ground truth and "
        "predictions). Clips also get a per-frame grid and an animated GIF. Raw signed maps are saved to "
        "maps.pt with their layer, target class, checkpoint sha256 and input name.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="image files or folders, video files, or test:N for the first N items of the checkpoint's test set",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint (e.g. RUN/checkpoints/best.pt)")
    p.add_argument("--compare", type=Path, default=None, help="a second checkpoint, shown side by side")
    p.add_argument("--out", type=Path, default=Path("runs/explain"), help="output folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    add_settings(p, Group(ExplainSettings), title="atcon explain settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One function on purpose: a linear script (load, compute the maps, draw and save each input)
    over :mod:`atcon.explain`.
    """
    from atcon.explain import compute_maps, load_inputs, to_model_maps
    from atcon.trained_models import display_stats, load_model
    from atcon.viz import clip_frames_figure, clip_gif, comparison_figure, save_figure

    (opts,) = read_settings(args, Group(ExplainSettings))
    models = [load_model(args.checkpoint)]
    if args.compare is not None:
        other = load_model(args.compare)
        if other.video != models[0].video:
            raise ValueError("--compare must be a model of the same kind (image or video)")
        if other.name == models[0].name:
            models[0].name, other.name = f"{other.name} (A)", f"{other.name} (B)"
        models.append(other)
    inputs = load_inputs(list(args.inputs), models[0])
    targets = None
    if opts.target == "gt":
        assert inputs.truth_index is not None
        if bool((inputs.truth_index < 0).any()):
            raise ValueError("--target gt needs ground truth: use test:N inputs")
        targets = inputs.truth_index
    raws = [compute_maps(m, inputs.x, targets, args.device) for m in models]
    shown = [to_model_maps(m, inputs.x, r) for m, r in zip(models, raws)]
    mean, std = display_stats(models[0])
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    video = inputs.x.ndim == 5
    written: list[Path] = []
    for i, name in enumerate(inputs.names):
        stem = f"{i:03d}-{slug(str(Path(name).with_suffix('')), 'input')}"
        x = inputs.x[i : i + 1]
        row = [s.item(i) for s in shown]
        if video:
            t = x.shape[2] // 2  # the middle frame stands for the clip in the side-by-side figure
            frame_maps = [s.frame(t) for s in row]
            fig = comparison_figure(x[:, :, t], [inputs.truth[i]], frame_maps, mean=mean, std=std)
            written.append(save_figure(fig, out / f"{stem}.png"))
            for m, s in zip(models, row):
                suffix = "" if len(models) == 1 else f"-{slug(m.name, 'model')}"
                title = f"{name} | GT: {inputs.truth[i] or '?'} | {m.name}: {s.predictions[0]}"
                if s.scores is not None:
                    title += f", r={float(s.scores[0]):+.2f}"
                grid = clip_frames_figure(
                    x[0], s.cams[0], s.gbs[0], title, mean=mean, std=std, max_frames=opts.frames
                )
                written.append(save_figure(grid, out / f"{stem}{suffix}-frames.png"))
                written.append(clip_gif(x[0], s.cams[0], out / f"{stem}{suffix}.gif", mean=mean, std=std))
        else:
            fig = comparison_figure(x, [inputs.truth[i]], row, mean=mean, std=std)
            written.append(save_figure(fig, out / f"{stem}.png"))
    payload: dict[str, Any] = {
        "inputs": inputs.names,
        "ground_truth": inputs.truth,
        "models": [
            {
                "name": m.name,
                "checkpoint": str(m.path),
                "checkpoint_sha256": m.sha256,
                "model_name": m.checkpoint["model_name"],
                "classes": list(m.classes),
                "layer": r.layer,
                "target_class": r.targets,
                "target_name": [m.classes[int(t)] for t in r.targets],
                "gradcam": r.gradcam,
                "guided_backprop": r.guided_backprop,
                "mask": r.mask,
                "consistency": r.consistency,
                "logits": r.logits,
            }
            for m, r in zip(models, raws)
        ],
    }
    torch.save(payload, out / "maps.pt")
    for i, name in enumerate(inputs.names):
        line = f"  {name:28s} GT {inputs.truth[i] or '-':16s}"
        for m, s in zip(models, shown):
            r = "" if s.scores is None else f" r={float(s.scores[i]):+.3f}"
            line += f" | {m.name}: {s.predictions[i]}{r}"
        print(line)
    print(f"figures: {len(written)} files in {out}\nraw maps: {out / 'maps.pt'}")
    return 0
