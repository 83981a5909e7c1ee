"""The ``fashion-events`` benchmark: event clips with subjects and per-frame boxes.

It stands in for the paper's hospital videos; written deterministically for a seed::

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atcon.data._common import import_av, prepare_out, write_meta
from atcon.data.drawing import Source, background, fragment, ink_layer, paste, random_colour
from atcon.data.fashion import load_fashion_mnist

EVENTS: tuple[str, ...] = ("rocking", "patting", "spinning", "approaching", "still")
"""The 5 motion events of ``fashion-events``, in label order."""


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
    d_ink = fragment(rng, distractor_source, scale * 1.3)
    d_colour = random_colour(rng)
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
            paste(canvas, d_ink, d_colour, int(pos[1]), int(pos[0]))
        ink = ink_layer(subject, (side, side), angle)
        top, left = round(cy - ink.shape[0] / 2), round(cx - ink.shape[1] / 2)
        box = paste(canvas, ink, colour, top, left)
        boxes[i] = box if box is not None else np.nan
        frames[i] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return frames, boxes


def write_video(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Write ``uint8`` ``(T, H, W, 3)`` frames as lossless H.264 (even ``H`` and ``W`` not required)."""
    av = import_av()

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
    out = prepare_out(out)
    root_rng = np.random.default_rng([seed, 3])
    picks = root_rng.choice(len(images), size=config.num_subjects, replace=len(images) < config.num_subjects)
    rows: list[dict[str, Any]] = []
    total = config.num_subjects * len(EVENTS)
    for s, pick in enumerate(picks):
        subject_rng = np.random.default_rng([seed, 4, s])
        colour = random_colour(subject_rng)
        room = background(subject_rng, config.frame_size, config.frame_size, contrast=0.4, grain=4.0)
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
    write_meta(out, "fashion-events", seed, {**vars(config), "counts": {"clips": len(rows)}})
    return out
