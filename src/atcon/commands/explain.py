"""``atcon explain``: attention maps of trained checkpoints for images, clips or test items.

Per input: a figure with the input, the Grad-CAM overlay, Guided Backprop, the consistency mask
and score of each checkpoint (side by side with the ground truth and each model's prediction when
two are given, as in the paper's Figures 1-2); clips also get a per-frame grid and an animated
GIF. The raw signed maps go to ``maps.pt`` with their metadata.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from atcon.commands.evaluate import (
    LoadedModel,
    checkpoint_dataset,
    display_stats,
    label_text,
    load_model,
    truth_text,
)

if TYPE_CHECKING:  # pragma: no cover
    from atcon.viz import ModelMaps

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_CHUNK = 8


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
    p.add_argument(
        "--target",
        choices=("pred", "gt"),
        default="pred",
        help="class of the maps: each model's top-1 prediction, or the (first) ground-truth class",
    )
    p.add_argument("--out", type=Path, default=Path("runs/explain"), help="output folder")
    p.add_argument("--frames", type=int, default=8, help="frames shown in the per-frame grid of clips")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    p.set_defaults(func=run)


@dataclass
class Inputs:
    """A batch to explain: normalised inputs, names and, for test items, ground truth."""

    x: Tensor
    names: list[str]
    truth: list[str]
    truth_index: Tensor | None  # (N,) first ground-truth class, -1 when none


def _load_files(paths: list[Path], loaded: LoadedModel) -> Inputs:
    from atcon import data as D

    size = int(loaded.checkpoint.get("image_size") or 128)
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in (VIDEO_SUFFIXES if loaded.video else IMAGE_SUFFIXES)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such input: {p}")
    if not files:
        raise FileNotFoundError(
            f"no {'video' if loaded.video else 'image'} files in {', '.join(map(str, paths))}"
        )
    if loaded.video:
        tf = D.clip_eval_transform()
        clips = []
        for f in files:
            if f.suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"{f} is not a video file, but {loaded.name} is a video model")
            frames, _ = D.decode_clip(f, size=(size, size))
            clips.append(torch.as_tensor(tf(frames)).permute(1, 0, 2, 3))
        x = torch.stack(clips)
    else:
        from atcon.commands.maps import load_images

        for f in files:
            if f.suffix.lower() in VIDEO_SUFFIXES:
                raise ValueError(f"{f} is a video, but {loaded.name} is an image model")
        raw, _ = load_images(files, size)
        mean = torch.tensor(D.IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(D.IMAGENET_STD)[:, None, None]
        x = (raw - mean) / std
    return Inputs(x, [f.name for f in files], [""] * len(files), None)


def _load_test(n: int, loaded: LoadedModel) -> Inputs:
    from atcon.data import collate

    ds = checkpoint_dataset(loaded, "test")
    n = min(n, len(ds))  # type: ignore[arg-type]
    if n < 1:
        raise ValueError("the test set is empty")
    x, target = collate([ds[i] for i in range(n)])
    truth = truth_text(target, loaded.task, loaded.classes)
    if loaded.task == "multiclass":
        first = torch.as_tensor(target["label"]).long()
        ids = [str(c) for c in target.get("clip_id", range(n))]
    else:
        labels = torch.as_tensor(target["labels"]) > 0.5
        first = torch.where(labels.any(1), labels.float().argmax(1), torch.full((n,), -1))
        ids = [str(i) for i in target.get("image_id", range(n))]
    return Inputs(x, [f"test{i:03d}-{name}" for i, name in enumerate(ids)], truth, first)


def load_inputs(specs: list[str], loaded: LoadedModel) -> Inputs:
    """Parse INPUT arguments (files, folders, ``test:N``) into one batch."""
    parts: list[Inputs] = []
    files: list[Path] = []
    for s in specs:
        m = re.fullmatch(r"test:(\d+)", s)
        if m:
            parts.append(_load_test(int(m.group(1)), loaded))
        else:
            files.append(Path(s))
    if files:
        parts.append(_load_files(files, loaded))
    shapes = {tuple(p.x.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"inputs of different sizes cannot be explained together: {sorted(shapes)}")
    first = [p.truth_index if p.truth_index is not None else torch.full((len(p.names),), -1) for p in parts]
    return Inputs(
        torch.cat([p.x for p in parts]),
        [n for p in parts for n in p.names],
        [t for p in parts for t in p.truth],
        torch.cat(first).long(),
    )


@dataclass
class RawMaps:
    """Signed maps of one model for a batch (layer resolution), with what produced them."""

    gradcam: Tensor
    guided_backprop: Tensor
    mask: Tensor | None
    consistency: Tensor
    targets: Tensor
    logits: Tensor
    layer: str


def compute_maps(
    loaded: LoadedModel, x: Tensor, targets: Tensor | None = None, device: str = "cpu"
) -> RawMaps:
    """Signed Grad-CAM, Guided Backprop, the consistency mask and score (chunked, on ``device``).

    Args:
        loaded: the model.
        x: normalised inputs.
        targets: class per item (None: each item's top-1 class).
        device: where to compute.

    Shape:
        x: (N, C, H, W) or (N, C, T, H, W); targets: (N,).
    """
    from atcon.attention import gradcam_and_guided_backprop
    from atcon.consistency import ConsistencyConfig, attention_consistency

    cfg = loaded.checkpoint.get("config", {})
    config = ConsistencyConfig(
        resolution=cfg.get("resolution", "gb_mask"), similarity=cfg.get("similarity", "pearson")
    )
    model = loaded.model.to(device).eval()
    parts: list[RawMaps] = []
    for start in range(0, x.shape[0], _CHUNK):
        xb = x[start : start + _CHUNK].to(device)
        tb = None if targets is None else targets[start : start + _CHUNK].to(device)
        cam, gb, t = gradcam_and_guided_backprop(model, xb, loaded.target_layer, tb)
        res = attention_consistency(model, xb, config, target_layer=loaded.target_layer, targets=t)
        parts.append(
            RawMaps(
                cam.cpu(),
                gb.cpu(),
                None if res.mask is None else res.mask.detach().cpu(),
                (-res.loss).detach().cpu() if config.similarity != "ssim" else (1 - res.loss).detach().cpu(),
                t.cpu(),
                res.logits.detach().cpu(),
                res.layer,
            )
        )
    return RawMaps(
        torch.cat([p.gradcam for p in parts]),
        torch.cat([p.guided_backprop for p in parts]),
        None if parts[0].mask is None else torch.cat([p.mask for p in parts if p.mask is not None]),
        torch.cat([p.consistency for p in parts]),
        torch.cat([p.targets for p in parts]),
        torch.cat([p.logits for p in parts]),
        parts[0].layer,
    )


def to_model_maps(loaded: LoadedModel, x: Tensor, raw: RawMaps) -> ModelMaps:
    """Display maps (ReLU'd Grad-CAM upsampled to the input) for :func:`atcon.viz.comparison_figure`."""
    from atcon.attention import upsample_to_input
    from atcon.viz import ModelMaps

    preds = label_text(raw.logits, loaded.task, loaded.classes)
    shown = [
        f"{p} [map: {loaded.classes[int(t)]}]" if p != loaded.classes[int(t)] else p
        for p, t in zip(preds, raw.targets)
    ]
    cams = upsample_to_input(raw.gradcam.clamp(min=0), x)
    return ModelMaps(loaded.name, cams, raw.guided_backprop, shown, raw.mask, raw.consistency)


def model_maps(
    loaded: LoadedModel, x: Tensor, targets: Tensor | None = None, device: str = "cpu"
) -> ModelMaps:
    """Maps of a model's top-1 (or given) classes ready to plot."""
    return to_model_maps(loaded, x, compute_maps(loaded, x, targets, device))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "input"


def run(args: argparse.Namespace) -> int:
    from atcon.viz import clip_frames_figure, clip_gif, comparison_figure, save_figure

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
    if args.target == "gt":
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
        stem = f"{i:03d}-{_slug(str(Path(name).with_suffix('')))}"
        x = inputs.x[i : i + 1]
        row = [_select(s, i) for s in shown]
        if video:
            t = x.shape[2] // 2  # the middle frame stands for the clip in the side-by-side figure
            frame_maps = [_frame(s, t) for s in row]
            fig = comparison_figure(x[:, :, t], [inputs.truth[i]], frame_maps, mean=mean, std=std)
            written.append(save_figure(fig, out / f"{stem}.png"))
            for m, s in zip(models, row):
                suffix = "" if len(models) == 1 else f"-{_slug(m.name)}"
                title = f"{name} | GT: {inputs.truth[i] or '?'} | {m.name}: {s.predictions[0]}"
                if s.scores is not None:
                    title += f", r={float(s.scores[0]):+.2f}"
                grid = clip_frames_figure(
                    x[0], s.cams[0], s.gbs[0], title, mean=mean, std=std, max_frames=args.frames
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


def _select(m: ModelMaps, i: int) -> ModelMaps:
    from atcon.viz import ModelMaps

    return ModelMaps(
        m.name,
        m.cams[i : i + 1],
        m.gbs[i : i + 1],
        [m.predictions[i]],
        None if m.masks is None else m.masks[i : i + 1],
        None if m.scores is None else m.scores[i : i + 1],
    )


def _frame(m: ModelMaps, t: int) -> ModelMaps:
    from atcon.viz import ModelMaps

    return ModelMaps(
        m.name,
        m.cams[:, t],
        m.gbs[:, :, t],
        m.predictions,
        None if m.masks is None else m.masks[:, t],
        m.scores,
    )
