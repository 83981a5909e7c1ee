"""Built-in offline benchmarks generated from Fashion-MNIST, deterministic for a seed.

``cluttered-fashion`` (multi-label images with boxes, VOC layout; stands in for PASCAL VOC)::

    <root>/JPEGImages/<id>.jpg           RGB, image_size x image_size (128), JPEG quality 95
    <root>/Annotations/<id>.xml          VOC XML: 1-3 objects of different classes, boxes, difficult=0
    <root>/ImageSets/Main/train.txt      objects from Fashion-MNIST train images 0-49999
    <root>/ImageSets/Main/val.txt        objects from Fashion-MNIST train images 50000-59999
    <root>/ImageSets/Main/trainval.txt   train + val
    <root>/ImageSets/Main/test.txt       objects from the Fashion-MNIST test split
    <root>/classes.txt                   the 10 classes in Fashion-MNIST label order
    <root>/meta.json                     generator, version, seed, sizes (written last: marks completion)

Each image: a textured background (smooth colour noise plus grain), 4-8 small tinted fragments of
other Fashion-MNIST images that carry no label (clutter), then 1-3 objects of distinct classes, each a
Fashion-MNIST image scaled to 36-64 px (at 128 px), tinted with a random saturated colour, placed at a
random position overlapping earlier objects by at most 0.2 IoU. Boxes are the tight boxes of the
object's ink.

``fashion-events`` (event clips with subjects and per-frame boxes; stands in for the hospital videos)::

    <root>/videos/<event>/<clip_id>.mp4  16 frames, 4 fps, frame_size x frame_size (80), H.264 lossless
                                         (libx264, crf 0, yuv444p: decoded frames match the rendered ones)
    <root>/boxes/<clip_id>.json          per-frame box of the subject (see atcon.data.video.read_boxes)
    <root>/manifest.csv                  path,label,subject,start,end,boxes
    <root>/splits/{train,val,test}.txt   three subject-disjoint, class-balanced sets (clip ids)
    <root>/classes.txt, <root>/meta.json

A subject is one Fashion-MNIST image with its own colour and its own background "room"; every subject
performs each of the 5 events once: ``rocking`` (side-to-side sway), ``patting`` (up-and-down taps),
``spinning`` (rotation), ``approaching`` (growing as it nears the camera), ``still`` (motionless while
a distractor fragment crosses the frame). A distractor also crosses 30% of the other clips, so it is a
cue, not the answer.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from atcon.data._common import default_data_dir, not_found
from atcon.data.fashion import FASHION_MNIST_CLASSES, load_fashion_mnist

GENERATOR_VERSION = 1
EVENTS: tuple[str, ...] = ("rocking", "patting", "spinning", "approaching", "still")
"""The 5 motion events of ``fashion-events``, in label order."""

Source = tuple[np.ndarray, np.ndarray]
"""``(images uint8 (N, h, w), labels int (N,))``, e.g. from :func:`load_fashion_mnist`."""

_INK = 25  # grey level above which a Fashion-MNIST pixel counts as part of the object


# ----------------------------------------------------------------------------- rendering helpers


def _background(
    rng: np.random.Generator, height: int, width: int, contrast: float = 1.0, grain: float = 12.0
) -> np.ndarray:
    """Smooth colour noise plus grain, ``float32`` ``(H, W, 3)`` in [0, 255].

    ``contrast`` < 1 pulls the colours towards mid-grey (a calmer scene).
    """
    cells = int(rng.integers(3, 7))
    coarse = rng.uniform(40, 200, size=(cells, cells, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    smooth = 120 + contrast * (smooth - 120)
    noise = rng.normal(0, grain, size=(height, width, 1)).astype(np.float32)
    return np.clip(smooth + noise, 0, 255)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random saturated colour, ``(3,)`` in [0, 255]."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    return np.array([r, g, b], np.float32) * 255


def _layer(patch: np.ndarray, side: tuple[int, int], angle: float = 0.0) -> np.ndarray:
    """Scale (and rotate) a grey patch; returns ``float32`` intensity in [0, 1], shape ``(h, w)``."""
    im = Image.fromarray(patch).resize((side[1], side[0]), Image.Resampling.BILINEAR)
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return np.asarray(im, np.float32) / 255.0


def _paste(canvas: np.ndarray, ink: np.ndarray, colour: np.ndarray, top: int, left: int) -> np.ndarray | None:
    """Alpha-composite tinted ``ink`` onto ``canvas`` in place; returns the ink's tight box or None.

    The ink's grey level shades the colour (keeping the garment's texture) and sets its opacity.
    Parts falling outside the canvas are cut off.
    """
    h, w = ink.shape
    height, width = canvas.shape[:2]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if y1 <= y0 or x1 <= x0:
        return None
    part = ink[y0 - top : y1 - top, x0 - left : x1 - left]
    alpha = np.clip(part * 1.6, 0, 1)[..., None]
    shade = (0.45 + 0.55 * part)[..., None] * colour
    region = canvas[y0:y1, x0:x1]
    region *= 1 - alpha
    region += alpha * shade
    rows = np.nonzero((part > _INK / 255).any(1))[0]
    cols = np.nonzero((part > _INK / 255).any(0))[0]
    if rows.size == 0:
        return None
    return np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1], np.float32)


def _fragment(rng: np.random.Generator, images: np.ndarray, scale: float) -> np.ndarray:
    """A small piece of a random source image, as an ink layer (clutter without a label)."""
    for _attempt in range(10):  # Fashion-MNIST has empty margins: redraw pieces with little ink
        src = images[int(rng.integers(len(images)))]
        h, w = src.shape
        ch, cw = int(rng.integers(h // 4, h // 2 + 1)), int(rng.integers(w // 4, w // 2 + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        piece = np.ascontiguousarray(src[y : y + ch, x : x + cw])
        if (piece > _INK).mean() > 0.3:
            break
    f = float(rng.uniform(1.0, 2.0)) * scale
    return _layer(piece, (max(2, round(ch * f)), max(2, round(cw * f))), float(rng.uniform(0, 360)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ink_box(ink: np.ndarray) -> np.ndarray:
    rows = np.nonzero((ink > _INK / 255).any(1))[0]
    cols = np.nonzero((ink > _INK / 255).any(0))[0]
    if rows.size == 0:
        return np.array([0, 0, ink.shape[1], ink.shape[0]], np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


# ----------------------------------------------------------------------------- cluttered-fashion


@dataclass(frozen=True)
class ClutteredFashionConfig:
    """Sizes of ``cluttered-fashion``.

    Attributes:
        num_train: Images in ``train`` (few-shot pool).
        num_val: Images in ``val``.
        num_test: Images in ``test``.
        image_size: Side in pixels.
        max_objects: Objects per image are 1 to this (distinct classes).
    """

    num_train: int = 3000
    num_val: int = 500
    num_test: int = 1500
    image_size: int = 128
    max_objects: int = 3

    def scaled(self, size: float) -> ClutteredFashionConfig:
        """Counts multiplied by ``size`` (at least 1 each)."""
        n_train, n_val, n_test = (
            max(1, round(n * size)) for n in (self.num_train, self.num_val, self.num_test)
        )
        return ClutteredFashionConfig(n_train, n_val, n_test, self.image_size, self.max_objects)


def render_cluttered_image(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    image_size: int = 128,
    max_objects: int = 3,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Render one cluttered multi-object image.

    Args:
        rng: Random generator (the image is a pure function of its state).
        images: Source images ``uint8`` ``(N, h, w)`` to draw objects and clutter from.
        labels: Source class per image ``(N,)``.
        image_size: Output side.
        max_objects: At most this many objects, of distinct classes (fewer if fewer classes exist).

    Returns:
        ``(image, objects)``: ``uint8`` ``(image_size, image_size, 3)`` and ``(class, box)`` pairs with
        0-based ``(x1, y1, x2, y2)`` pixel boxes.
    """
    scale = image_size / 128
    canvas = _background(rng, image_size, image_size)
    for _ in range(int(rng.integers(4, 9))):
        ink = _fragment(rng, images, scale)
        _paste(
            canvas,
            ink,
            _colour(rng),
            int(rng.integers(-4, image_size - 4)),
            int(rng.integers(-4, image_size - 4)),
        )
    present = np.unique(labels)
    count = int(rng.integers(1, min(max_objects, len(present)) + 1))
    classes = rng.choice(present, size=count, replace=False)
    objects: list[tuple[int, np.ndarray]] = []
    for cls in classes:
        pool = np.flatnonzero(labels == cls)
        src = images[int(pool[rng.integers(len(pool))])]
        side = int(rng.integers(round(36 * scale), round(64 * scale) + 1))
        ink = _layer(src, (side, side))
        tight = _ink_box(ink)
        for _attempt in range(20):
            top, left = (
                int(rng.integers(0, image_size - side + 1)),
                int(rng.integers(0, image_size - side + 1)),
            )
            box = tight + np.array([left, top, left, top], np.float32)
            if all(_iou(box, b) <= 0.2 for _, b in objects):
                break
        else:
            continue  # no room left: fewer objects
        pasted = _paste(canvas, ink, _colour(rng), top, left)
        if pasted is not None:
            objects.append((int(cls), pasted))
    if not objects:  # never leave an image without a label
        return render_cluttered_image(rng, images, labels, image_size, max_objects)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), objects


def _voc_xml(
    image_id: str, size: int, objects: Sequence[tuple[int, np.ndarray]], classes: Sequence[str]
) -> str:
    parts = [
        "<annotation>",
        "  <folder>cluttered-fashion</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for cls, box in objects:
        # VOC stores 1-based inclusive pixel indices.
        xmin, ymin = int(box[0]) + 1, int(box[1]) + 1
        xmax, ymax = int(box[2]), int(box[3])
        parts += [
            "  <object>",
            f"    <name>{escape(classes[cls])}</name>",
            "    <pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>",
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def generate_cluttered_fashion(
    out: str | Path,
    *,
    config: ClutteredFashionConfig | None = None,
    seed: int = 0,
    train_source: Source | None = None,
    test_source: Source | None = None,
    classes: Sequence[str] = FASHION_MNIST_CLASSES,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cluttered-fashion`` in VOC layout (see the module docstring).

    Image ``k`` of a split depends only on ``(seed, split, k)``, so a larger ``config`` extends a
    smaller one instead of reshuffling it.

    Args:
        out: Output folder; created; must be empty or absent.
        config: Sizes (default :class:`ClutteredFashionConfig`).
        seed: Random seed.
        train_source: Objects for train (first 5/6) and val (last 1/6); default Fashion-MNIST train.
        test_source: Objects for test; default Fashion-MNIST test.
        classes: Name of each source label.
        progress: Called with ``(done, total)`` after each image.

    Returns:
        ``out``.
    """
    config = config or ClutteredFashionConfig()
    train_source = train_source if train_source is not None else load_fashion_mnist("train")
    test_source = test_source if test_source is not None else load_fashion_mnist("test")
    out = _prepare_out(out)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cut = len(train_source[0]) * 5 // 6
    plan = [
        ("train", 0, config.num_train, train_source[0][:cut], train_source[1][:cut]),
        ("val", 1, config.num_val, train_source[0][cut:], train_source[1][cut:]),
        ("test", 2, config.num_test, test_source[0], test_source[1]),
    ]
    total, done = sum(p[2] for p in plan), 0
    ids: dict[str, list[str]] = {}
    for split, code, count, images, labels in plan:
        ids[split] = []
        for k in range(count):
            rng = np.random.default_rng([seed, code, k])
            image, objects = render_cluttered_image(
                rng, images, labels, config.image_size, config.max_objects
            )
            image_id = f"{split}_{k:06d}"
            Image.fromarray(image).save(out / "JPEGImages" / f"{image_id}.jpg", quality=95)
            (out / "Annotations" / f"{image_id}.xml").write_text(
                _voc_xml(image_id, config.image_size, objects, classes)
            )
            ids[split].append(image_id)
            done += 1
            if progress is not None:
                progress(done, total)
    ids["trainval"] = ids["train"] + ids["val"]
    for split, names in ids.items():
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    _write_meta(
        out, "cluttered-fashion", seed, {**vars(config), "counts": {s: len(v) for s, v in ids.items()}}
    )
    return out


# ----------------------------------------------------------------------------- fashion-events


@dataclass(frozen=True)
class FashionEventsConfig:
    """Sizes of ``fashion-events``.

    Attributes:
        num_subjects: Subjects; each performs every event once, so clips = subjects x 5.
        frame_size: Frame side in pixels.
        num_frames: Frames per clip.
        fps: Frame rate of the written videos.
    """

    num_subjects: int = 120
    frame_size: int = 80
    num_frames: int = 16
    fps: int = 4

    def scaled(self, size: float) -> FashionEventsConfig:
        """Subjects multiplied by ``size`` (at least 3, one per split set)."""
        return FashionEventsConfig(
            max(3, round(self.num_subjects * size)), self.frame_size, self.num_frames, self.fps
        )


def render_event_clip(
    rng: np.random.Generator,
    subject: np.ndarray,
    colour: np.ndarray,
    room: np.ndarray,
    event: str,
    distractor_source: np.ndarray,
    num_frames: int = 16,
    fps: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one event clip of a subject.

    Args:
        rng: Random generator for this clip (motion parameters, noise, distractor).
        subject: The subject's grey image ``uint8`` ``(h, w)``.
        colour: The subject's tint ``(3,)``.
        room: The subject's background ``float32`` ``(S, S, 3)``.
        event: One of ``EVENTS``.
        distractor_source: Images to cut the distractor fragment from.
        num_frames: ``T``.
        fps: Frames per second (sets the motion per frame).

    Returns:
        ``(frames, boxes)``: ``uint8`` ``(T, S, S, 3)`` and ``float32`` ``(T, 4)`` subject boxes (XYXY).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
    size = room.shape[0]
    scale = size / 80
    base = int(rng.integers(round(30 * scale), round(40 * scale) + 1))
    amp = float(rng.uniform(8, 14)) * scale
    freq = float(rng.uniform(0.5, 1.0))  # Hz; below the 2 Hz Nyquist limit of 4 fps sampling
    phase = float(rng.uniform(0, 2 * math.pi))
    spin = float(rng.uniform(60, 120)) * (1 if rng.uniform() < 0.5 else -1)  # degrees per second
    grow = (float(rng.uniform(0.55, 0.7)), float(rng.uniform(1.25, 1.45)))
    # Half the largest extent the subject reaches, so it stays in frame throughout the event.
    half = base / 2 * {"approaching": grow[1], "spinning": 1.2}.get(event, 1.0)
    half += amp if event in ("rocking", "patting") else 0.0
    half = min(half, size / 2)
    cx0 = float(rng.uniform(half, size - half))
    cy0 = float(rng.uniform(half, size - half))
    with_distractor = event == "still" or rng.uniform() < 0.3
    d_ink = _fragment(rng, distractor_source, scale * 1.3)
    d_colour = _colour(rng)
    d_from = rng.uniform(0, size, size=2)
    d_to = rng.uniform(0, size, size=2)
    if rng.uniform() < 0.5:  # start and end on opposite sides so it visibly crosses
        d_from[0], d_to[0] = -d_ink.shape[1], size
    else:
        d_from[1], d_to[1] = -d_ink.shape[0], size
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    boxes = np.zeros((num_frames, 4), np.float32)
    for i in range(num_frames):
        t = i / fps
        cx, cy, side, angle = cx0, cy0, base, 0.0
        if event == "rocking":
            cx += amp * math.sin(2 * math.pi * freq * t + phase)
        elif event == "patting":
            cy -= amp * abs(math.sin(math.pi * 2 * freq * t + phase))
        elif event == "spinning":
            angle = spin * t + math.degrees(phase)
        elif event == "approaching":
            side = round(base * (grow[0] + (grow[1] - grow[0]) * i / max(1, num_frames - 1)))
        else:  # still: sub-pixel sensor jitter only
            cx += float(rng.normal(0, 0.3))
            cy += float(rng.normal(0, 0.3))
        canvas = room + rng.normal(0, 2, size=room.shape).astype(np.float32)  # sensor noise
        if with_distractor:
            pos = d_from + (d_to - d_from) * i / max(1, num_frames - 1)
            _paste(canvas, d_ink, d_colour, int(pos[1]), int(pos[0]))
        ink = _layer(subject, (side, side), angle)
        top, left = round(cy - ink.shape[0] / 2), round(cx - ink.shape[1] / 2)
        box = _paste(canvas, ink, colour, top, left)
        boxes[i] = box if box is not None else np.nan
        frames[i] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return frames, boxes


def write_video(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Write ``uint8`` ``(T, H, W, 3)`` frames as lossless H.264 (even ``H`` and ``W`` not required)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv444p"  # no chroma subsampling: small tinted objects keep their colour
        stream.options = {"crf": "0", "preset": "ultrafast"}
        stream.thread_count = 1  # tiny frames: thread start-up costs more than it saves
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate_fashion_events(
    out: str | Path,
    *,
    config: FashionEventsConfig | None = None,
    seed: int = 0,
    source: Source | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``fashion-events`` (see the module docstring).

    Args:
        out: Output folder; created; must be empty or absent.
        config: Sizes (default :class:`FashionEventsConfig`).
        seed: Random seed.
        source: Subject and distractor images; default Fashion-MNIST train.
        progress: Called with ``(done, total)`` after each clip.

    Returns:
        ``out``.
    """
    from atcon.data.fewshot import subject_disjoint_split

    config = config or FashionEventsConfig()
    images, _ = source if source is not None else load_fashion_mnist("train")
    out = _prepare_out(out)
    root_rng = np.random.default_rng([seed, 3])
    picks = root_rng.choice(len(images), size=config.num_subjects, replace=len(images) < config.num_subjects)
    rows: list[dict[str, Any]] = []
    total = config.num_subjects * len(EVENTS)
    for s, pick in enumerate(picks):
        subject_rng = np.random.default_rng([seed, 4, s])
        colour = _colour(subject_rng)
        room = _background(subject_rng, config.frame_size, config.frame_size, contrast=0.4, grain=4.0)
        subject_id = f"s{s:04d}"
        for e, event in enumerate(EVENTS):
            rng = np.random.default_rng([seed, 5, s, e])
            frames, boxes = render_event_clip(
                rng, images[int(pick)], colour, room, event, images, config.num_frames, config.fps
            )
            clip_id = f"{subject_id}_{event}"
            video_rel = f"videos/{event}/{clip_id}.mp4"
            boxes_rel = f"boxes/{clip_id}.json"
            (out / "videos" / event).mkdir(parents=True, exist_ok=True)
            (out / "boxes").mkdir(exist_ok=True)
            write_video(out / video_rel, frames, config.fps)
            (out / boxes_rel).write_text(
                json.dumps(
                    {
                        "fps": config.fps,
                        "width": config.frame_size,
                        "height": config.frame_size,
                        "boxes": [[round(float(v), 2) for v in b] for b in boxes],
                    }
                )
            )
            rows.append(
                {
                    "path": video_rel,
                    "label": event,
                    "subject": subject_id,
                    "start": 0,
                    "end": config.num_frames / config.fps,
                    "boxes": boxes_rel,
                }
            )
            if progress is not None:
                progress(len(rows), total)
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "subject", "start", "end", "boxes"])
        writer.writeheader()
        writer.writerows(rows)
    sets = subject_disjoint_split(
        [EVENTS.index(r["label"]) for r in rows], [r["subject"] for r in rows], seed=seed, num_sets=3
    )
    (out / "splits").mkdir()
    for name, members in zip(("train", "val", "test"), sets):
        (out / "splits" / f"{name}.txt").write_text("".join(f"{rows[i]['path']}\n" for i in members))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in EVENTS))
    _write_meta(out, "fashion-events", seed, {**vars(config), "counts": {"clips": len(rows)}})
    return out


# ----------------------------------------------------------------------------- output and registry


def _prepare_out(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder is not empty: {out} (choose another, or delete it first)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_meta(out: Path, name: str, seed: int, params: dict[str, Any]) -> None:
    meta = {"name": name, "generator_version": GENERATOR_VERSION, "seed": seed, **params}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


@dataclass(frozen=True)
class _Benchmark:
    generate: Callable[..., Path]
    config: Any


BENCHMARKS: dict[str, _Benchmark] = {
    "cluttered-fashion": _Benchmark(generate_cluttered_fashion, ClutteredFashionConfig()),
    "fashion-events": _Benchmark(generate_fashion_events, FashionEventsConfig()),
}
"""Built-in benchmarks by name."""


def _spec(name: str) -> _Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def benchmark_dir(name: str, root: str | Path | None = None, seed: int = 0, size: float = 1.0) -> Path:
    """Cache folder of a benchmark: ``<root or data dir>/<name>-seed<seed>[-size<size>]``."""
    _spec(name)
    base = Path(root).expanduser() if root is not None else default_data_dir()
    suffix = "" if size == 1 else f"-size{size:g}"
    return base / f"{name}-seed{seed}{suffix}"


def build_benchmark(
    name: str,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    size: float = 1.0,
    source_root: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate a benchmark unless a complete copy is already there.

    Generation goes to a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves a folder that looks complete.

    Args:
        name: ``"cluttered-fashion"`` or ``"fashion-events"``.
        out: Exact output folder; default :func:`benchmark_dir`.
        seed: Random seed.
        size: Multiplies the default counts (0.1 for a quick look, 10 for a bigger benchmark).
        source_root: Folder of the Fashion-MNIST IDX files (default: see :mod:`atcon.data.fashion`).
        force: Regenerate even if a complete copy exists (only a folder this function made is replaced).
        progress: Called with ``(done, total)``.

    Returns:
        The benchmark folder.
    """
    spec = _spec(name)
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    out = Path(out).expanduser() if out is not None else benchmark_dir(name, None, seed, size)
    config = spec.config.scaled(size)
    meta_path = out / "meta.json"
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        expected = {"name": name, "seed": seed, "generator_version": GENERATOR_VERSION, **vars(config)}
        if all(meta.get(k) == v for k, v in expected.items()):
            return out
        raise FileExistsError(
            f"{out} holds a different build ({meta_path}); pass force=True or another folder"
        )
    if out.exists() and any(out.iterdir()) and not (force and meta_path.is_file()):
        raise FileExistsError(f"output folder is not empty: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        kwargs: dict[str, Any] = {"config": config, "seed": seed, "progress": progress}
        if name == "cluttered-fashion":
            kwargs["train_source"] = load_fashion_mnist("train", source_root)
            kwargs["test_source"] = load_fashion_mnist("test", source_root)
        else:
            kwargs["source"] = load_fashion_mnist("train", source_root)
        spec.generate(tmp / "data", **kwargs)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp / "data", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_benchmark(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    size: float = 1.0,
    ids: Sequence[str] | None = None,
    **dataset_kwargs: Any,
) -> Any:
    """Return a split of a built-in benchmark as a dataset, generating it on first use.

    Args:
        name: ``"cluttered-fashion"`` or ``"fashion-events"``.
        split: ``train``, ``val``, ``test`` (and ``trainval`` for images).
        root: Exact benchmark folder; default the cache folder (:func:`benchmark_dir`).
        seed: Generation seed.
        size: Generation size multiplier.
        ids: Serve these ids instead of the split (e.g. ``Split.train`` from :func:`benchmark_split`).
        **dataset_kwargs: Passed to :class:`~atcon.data.voc.VOCDataset` (``transform``, ...) or
            :class:`~atcon.data.video.VideoClipDataset` (``transform``, ``cache``, ``size``, ...).

    Returns:
        A ``VOCDataset`` for ``cluttered-fashion``, a ``VideoClipDataset`` for ``fashion-events``.
    """
    folder = build_benchmark(name, root, seed=seed, size=size)
    if name == "cluttered-fashion":
        from atcon.data.voc import VOCDataset

        return VOCDataset(folder, split, ids=ids, **dataset_kwargs)
    from atcon.data.video import VideoClipDataset

    if ids is None:
        ids = _read_list(folder / "splits" / f"{split}.txt")
    return VideoClipDataset(folder / "manifest.csv", ids=ids, **dataset_kwargs)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise not_found("split file", path)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def benchmark_split(
    name: str,
    per_class: int,
    seed: int = 0,
    *,
    root: str | Path | None = None,
    size: float = 1.0,
    data_seed: int = 0,
) -> Any:
    """The paper's few-shot split of a built-in benchmark (generating it if needed).

    ``cluttered-fashion``: ``per_class`` images per class from ``train``, ``val`` and ``test`` as
    generated. ``fashion-events``: ``per_class`` clips per class from the ``train`` set, ``val`` and
    ``test`` as generated (all three subject-disjoint).

    ``seed`` draws the few-shot training subset; ``data_seed`` names the generated benchmark
    (the same test set for every ``seed``).

    Returns:
        A :class:`~atcon.data.fewshot.Split`; save it with ``Split.save``.
    """
    from atcon.data.fewshot import Split, sample_per_class, voc_fewshot_split

    folder = build_benchmark(name, root, seed=data_seed, size=size)
    if name == "cluttered-fashion":
        return voc_fewshot_split(folder, per_class, seed, val_split="val", test_split="test")
    from atcon.data.video import VideoClipDataset

    train = VideoClipDataset(
        folder / "manifest.csv", ids=_read_list(folder / "splits" / "train.txt"), probe=False
    )
    picked = sample_per_class(train.labels, per_class, seed, classes=train.classes)
    return Split(
        train=[train.ids[i] for i in picked],
        val=_read_list(folder / "splits" / "val.txt"),
        test=_read_list(folder / "splits" / "test.txt"),
        classes=list(train.classes),
        per_class=per_class,
        seed=seed,
        protocol="subject-disjoint",
        meta={"root": str(folder), "benchmark": name},
    )


def timed_build(name: str, **kwargs: Any) -> tuple[Path, float]:
    """:func:`build_benchmark` returning ``(folder, seconds)``; used by the CLI to report timing."""
    t0 = time.perf_counter()
    path = build_benchmark(name, **kwargs)
    return path, time.perf_counter() - t0
