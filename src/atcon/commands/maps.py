"""``atcon maps``: compute, save and plot attention maps and consistency scores for images."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from atcon.commands._config import Group, add_settings, read_settings


@dataclass(frozen=True)
class MapsSettings:
    """The network ``atcon maps`` explains and how images reach it (its flags and TOML keys;
    ``--mean``/``--std`` are flags of three numbers).

    Attributes:
        model: Architecture: small, a torchvision model name (resnet50, efficientnet_b0, ...)
            or timm:NAME.
        weights: Checkpoint path or torchvision weights name (unset: random weights).
        classes: Number of classes of the model's head.
        size: Input side in pixels (unset: the model's).
        layer: Grad-CAM layer, a dotted module name (unset: discovered).
        interpolation: Resize interpolation (unset: the network's own).
        seed: Seed of the untrained model's weights and the drawn sample images.
    """

    model: str = "small"
    weights: str | None = None
    classes: int = 10
    size: int | None = None
    layer: str | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    seed: int = 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "maps",
        help="Grad-CAM, Guided Backprop, mask and consistency score of images",
        description="Compute Grad-CAM, Guided Backprop, the consistency mask and the attention-consistency "
        "score (Pearson r of Algorithm 1; higher = more consistent) for each input image, and save the raw "
        "maps (maps.pt) and a figure (maps.png). Without images, a built-in synthetic sample is used.",
    )
    p.add_argument("images", nargs="*", type=Path, help="image files or folders (default: a built-in sample)")
    p.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        metavar=("R", "G", "B"),
        help="normalisation mean (default: the network's own, e.g. timm's pretrained config; ImageNet's otherwise)",
    )
    p.add_argument(
        "--std",
        type=float,
        nargs=3,
        default=None,
        metavar=("R", "G", "B"),
        help="normalisation std (as --mean)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/maps"), help="output folder")
    add_settings(p, Group(MapsSettings), title="atcon maps settings")
    p.set_defaults(func=run)


def sample_images(n: int = 2, size: int = 128, seed: int = 0) -> Tensor:
    """Deterministic synthetic RGB images (bright shapes on textured noise), ``(n, 3, size, size)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = 0.25 * torch.rand(n, 3, size, size, generator=g)
    for i in range(n):
        cy, cx = (torch.rand(2, generator=g) * size * 0.5 + size * 0.25).tolist()
        r = size * 0.15
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        colour = torch.rand(3, 1, generator=g) * 0.5 + 0.5
        out[i][:, disk] = colour
        sq = (yy // (size // 8) == 1) & (xx // (size // 8) == 6)
        out[i][:, sq] = 0.9
    return out


def run(args: argparse.Namespace) -> int:
    from atcon.attention import gradcam_and_guided_backprop, upsample_to_input
    from atcon.consistency import attention_consistency
    from atcon.data import IMAGE_SUFFIXES, load_images
    from atcon.data.files import skipped_files
    from atcon.models import build_model, model_preprocess, model_spec
    from atcon.trained_models import file_sha256
    from atcon.viz import attention_figure, save_figure

    (opts,) = read_settings(args, Group(MapsSettings))
    spec = model_spec(opts.model)
    if spec.video:
        raise ValueError(f"{opts.model} is a video model; `atcon maps` takes images")
    torch.manual_seed(opts.seed)
    size = opts.size or spec.input_size
    model = build_model(opts.model, opts.classes, opts.weights).eval()
    # The network's own normalisation and interpolation (ImageNet's by default), flags over them.
    pre = model_preprocess(opts.model)
    pre = dataclasses.replace(
        pre,
        mean=tuple(args.mean) if args.mean else pre.mean,
        std=tuple(args.std) if args.std else pre.std,
        interpolation=opts.interpolation or pre.interpolation,
    )
    if args.images:
        raw, names = load_images(args.images, size, pre.interpolation)
        skipped = skipped_files(args.images, IMAGE_SUFFIXES)
        if skipped:
            shown = ", ".join(f.name for f in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            print(f"skipped {len(skipped)} non-image file(s) in the given folder(s): {shown}")
    else:
        raw, names = sample_images(2, size, opts.seed), ["sample-0", "sample-1"]
    x = (raw - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(pre.std)[:, None, None]

    cam, gb, targets = gradcam_and_guided_backprop(model, x, opts.layer)
    result = attention_consistency(model, x, target_layer=opts.layer)
    score = (-result.loss).detach()
    logits = result.logits.detach()
    prob = logits.softmax(1).gather(1, targets.reshape(-1, 1)).squeeze(1)
    assert result.mask is not None
    mask = result.mask.detach()

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "names": names,
            "inputs": x,  # the normalised batch the maps were computed from
            "mean": list(pre.mean),
            "std": list(pre.std),
            "interpolation": pre.interpolation,
            "gradcam": cam,
            "guided_backprop": gb,
            "mask": mask,
            "targets": targets,
            "logits": logits,
            "consistency": score,
            "layer": result.layer,
            "model": opts.model,
            "weights": opts.weights,
            "weights_sha256": (
                file_sha256(opts.weights) if opts.weights and Path(opts.weights).is_file() else None
            ),
        },
        args.out / "maps.pt",
    )
    titles = [f"{n}: class {int(t)}, r={float(s):.2f}" for n, t, s in zip(names, targets, score)]
    fig = attention_figure(x, upsample_to_input(cam, x), gb, mask, titles, mean=pre.mean, std=pre.std)
    png = save_figure(fig, args.out / "maps.png")
    print(
        f"model={opts.model} layer={result.layer} input={size}px mean={pre.mean} std={pre.std} "
        f"interpolation={pre.interpolation}"
    )
    for n, t, p, s in zip(names, targets.tolist(), prob.tolist(), score.tolist()):
        print(f"  {n:24s} target class {t:3d} (softmax {p:.3f})  consistency r = {s:+.3f}")
    print(f"raw maps: {args.out / 'maps.pt'}\nfigure:   {png}")
    return 0
