"""Video event clips decoded with PyAV (paper, section 4.1).

A clip is ``num_frames`` frames (16) sampled at ``fps`` (4 frames/s), i.e. 4 s of video, each frame
reduced to ``frame_size`` (80x80) with area averaging, and returned as ``(C, T, H, W)`` as torchvision's
``r3d_18`` expects.

Sources are listed as :class:`~atcon.data.clip_specs.ClipSpec` records by
:mod:`atcon.data.clip_specs` (a CSV manifest, or a folder-per-class tree).

The frame for sample time ``t = start + i / fps`` is the last decoded frame shown at or before ``t``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from atcon.data import decoded
from atcon.data._common import DataError, OnError, check_on_error, filter_bad, import_av, not_found
from atcon.data.clip_specs import ClipSpec, read_boxes, read_manifest, scan_class_folders

_EPS = 1e-6


def probe_video(path: str | Path) -> tuple[float | None, float]:
    """Open a video and read its duration and frame rate without decoding.

    Returns:
        ``(duration_seconds or None if unknown, frames_per_second)``.

    Raises:
        FileNotFoundError: No such file.
        DataError: Not a readable video, or no video stream.
    """
    av = import_av()

    path = Path(path)
    if not path.is_file():
        raise not_found("video", path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError("no video stream", path)
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base), rate
            if container.duration is not None:
                return container.duration / 1_000_000, rate
            return None, rate
    except av.FFmpegError as err:
        raise DataError(f"unreadable or corrupt video ({err})", path) from err


def decode_clip(
    path: str | Path,
    num_frames: int = 16,
    fps: float = 4.0,
    size: tuple[int, int] | None = (80, 80),
    start: float = 0.0,
) -> tuple[torch.Tensor, list[float]]:
    """Decode ``num_frames`` frames sampled at ``fps`` from ``start`` seconds.

    Args:
        path: Video file.
        num_frames: ``T``.
        fps: Sampling rate; the clip spans ``num_frames / fps`` seconds (16 / 4 = 4 s in the paper).
        size: ``(H, W)`` of the returned frames (area-averaged); ``None`` keeps the source size.
        start: Time of the first sample, in seconds.

    Returns:
        ``(frames, times)``: ``uint8`` frames and the presentation time of the source frame used for each.

    Shape:
        frames: ``(T, 3, H, W)``.

    Raises:
        DataError: Corrupt file, or the video ends before the last sample time ("shorter than the clip").
    """
    av = import_av()

    path = Path(path)
    if not path.is_file():
        raise not_found("video", path)
    targets = [start + i / fps for i in range(num_frames)]
    out: list[np.ndarray | None] = [None] * num_frames
    times: list[float] = [0.0] * num_frames
    fmt: dict[str, Any] = {"format": "rgb24"}
    if size is not None:
        fmt.update(height=int(size[0]), width=int(size[1]), interpolation="AREA")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError("no video stream", path)
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            i = 0
            prev: Any = None
            prev_t = 0.0
            converted: dict[int, np.ndarray] = {}

            def take(frame: Any, t: float) -> None:
                nonlocal i
                key = id(frame)
                if key not in converted:
                    converted.clear()  # only the latest frame can be used again
                    converted[key] = frame.to_ndarray(**fmt)
                out[i], times[i] = converted[key], t
                i += 1

            for k, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else k / rate
                # Samples strictly before this frame show the previous one (or this one if it is the first).
                while i < num_frames and targets[i] < t - _EPS:
                    take(prev if prev is not None else frame, prev_t if prev is not None else t)
                if i == num_frames:
                    break
                prev, prev_t = frame, t
            # The last frame stays on screen for one frame period.
            while i < num_frames and prev is not None and targets[i] < prev_t + 1.0 / rate - _EPS:
                take(prev, prev_t)
    except av.FFmpegError as err:
        raise DataError(f"unreadable or corrupt video ({err})", path) from err
    if i < num_frames:
        end = prev_t + 1.0 / rate if prev is not None else 0.0
        raise DataError(
            f"video is shorter than the clip: {num_frames} frames at {fps:g} fps from {start:g} s need "
            f"{start + num_frames / fps:g} s, the video ends at {end:.3g} s",
            path,
        )
    frames = np.stack([f for f in out if f is not None])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), times


class VideoClipDataset(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Labeled event clips for classification, with optional per-frame boxes.

    Args:
        source: A CSV manifest, a folder holding ``manifest.csv`` (as ``atcon data build`` writes), a
            folder-per-class tree, or a list of :class:`ClipSpec`.
        ids: Clip ids to serve, in this order (e.g. from a split file); default all.
        classes: Class names in label order; default ``classes.txt`` beside the manifest, else the sorted
            labels. A label outside ``classes`` is an error ("unknown class").
        num_frames: ``T`` (16).
        fps: Sampling rate (4 frames/s).
        frame_size: Frame ``(H, W)`` after decoding (80x80).
        transform: Called as ``transform(video)`` or, when boxes exist, ``transform(video, target)`` with a
            ``uint8`` ``tv_tensors.Video`` ``(T, 3, H, W)``; see :mod:`atcon.data.transforms`.
        cache: Keep decoded clips in memory, shared with every other cached dataset of the process
            (:mod:`atcon.data.decoded`; experiments revisit the same clips many times). Each
            ``DataLoader`` worker holds its own copy; call :meth:`preload` before creating the
            loader to share one.
        on_error: ``"raise"`` stops at the first bad clip naming its file; ``"skip"`` drops clips that are
            missing, unreadable, too short or have an unknown class, with one warning giving the count.
        probe: Check every file's container and duration at construction (cheap: no decoding), so bad
            files surface before training starts.

    Items are ``(clip, target)``. ``clip`` is ``float32`` ``(3, T, H, W)``, in ``[0, 1]`` without a
    transform. ``target`` holds ``label`` (``int64`` scalar), ``subject`` (``str``), ``clip_id``
    (``str``) and, when the source has box files, ``boxes``: ``float32`` ``(T, 4)`` XYXY pixels of the
    returned frames (NaN rows for clips without a box file).
    """

    def __init__(
        self,
        source: str | Path | Sequence[ClipSpec],
        *,
        ids: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        num_frames: int = 16,
        fps: float = 4.0,
        frame_size: tuple[int, int] = (80, 80),
        transform: Callable[..., Any] | None = None,
        cache: bool = False,
        on_error: OnError = "raise",
        probe: bool = True,
    ) -> None:
        self.on_error = check_on_error(on_error)
        if num_frames < 1 or fps <= 0:
            raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames}, {fps}")
        self.source: Path | None = None
        if isinstance(source, (str, Path)):
            self.source = Path(source).expanduser()
            if self.source.is_dir() and (self.source / "manifest.csv").is_file():
                self.source = (
                    self.source / "manifest.csv"
                )  # a built benchmark's folder (as detect_data reads it)
            if self.source.is_dir():
                clips = scan_class_folders(self.source)
                classes_file = self.source / "classes.txt"
            else:
                clips = read_manifest(self.source)
                classes_file = self.source.parent / "classes.txt"
            if classes is None and classes_file.is_file():
                classes = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()]
        else:
            clips = list(source)
        if classes is None:
            classes = sorted({c.label for c in clips})
        self.classes: tuple[str, ...] = tuple(classes)
        self.class_to_index = {c: i for i, c in enumerate(self.classes)}
        if ids is not None:
            by_id = {c.clip_id: c for c in clips}
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise DataError(
                    f"{len(unknown)} clip id(s) not in the source, e.g. {unknown[0]!r}", self.source
                )
            clips = [by_id[i] for i in ids]
        self.num_frames, self.fps, self.frame_size = num_frames, fps, (int(frame_size[0]), int(frame_size[1]))
        self.transform = transform
        self.cache = cache
        self._boxes: dict[Path, tuple[float, int, int, np.ndarray]] = {}
        self.clips, self.skipped = filter_bad(clips, lambda c: self._check(c, probe), self.on_error, "clips")
        self.has_boxes = any(c.boxes is not None for c in self.clips)

    @property
    def clip_seconds(self) -> float:
        """Duration covered by a clip, ``num_frames / fps``."""
        return self.num_frames / self.fps

    def _check(self, clip: ClipSpec, probe: bool) -> None:
        if clip.label not in self.class_to_index:
            raise DataError(f"unknown class {clip.label!r} (known: {', '.join(self.classes)})", clip.path)
        start = clip.start or 0.0
        if clip.end is not None and clip.end - start < self.clip_seconds - _EPS:
            raise DataError(
                f"video is shorter than the clip: window {start:g}-{clip.end:g} s, a clip needs {self.clip_seconds:g} s",
                clip.path,
            )
        if probe:
            duration, rate = probe_video(clip.path)
            # The last sample, at start + (T-1)/fps, needs a frame on screen then. Container durations are
            # approximate, so only a clear shortfall fails here; decoding checks exactly.
            needed = start + (self.num_frames - 1) / self.fps
            if duration is not None and duration < needed - 1.0 / rate + _EPS:
                raise DataError(
                    f"video is shorter than the clip: {duration:.3g} s, a clip from {start:g} s needs "
                    f"{start + self.clip_seconds:g} s",
                    clip.path,
                )
        if clip.boxes is not None and not clip.boxes.is_file():
            raise not_found("box file", clip.boxes, f" (for {clip.path})")
        if self.on_error == "skip":
            # A container can probe fine and hold a garbage stream: decode the clip's frames once
            # (small), so that skip leaves out what training would fail on.
            decode_clip(clip.path, self.num_frames, self.fps, size=(16, 16), start=start)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def labels(self) -> list[int]:
        """Class index of every clip."""
        return [self.class_to_index[c.label] for c in self.clips]

    @property
    def subjects(self) -> list[str]:
        """Subject of every clip."""
        return [c.subject for c in self.clips]

    @property
    def ids(self) -> list[str]:
        """Clip id of every clip."""
        return [c.clip_id for c in self.clips]

    def frames(self, index: int) -> tuple[torch.Tensor, list[float]]:
        """Decoded ``uint8`` frames ``(T, 3, H, W)`` of clip ``index`` and their source times (cached)."""
        clip = self.clips[index]
        args = (clip.path, self.num_frames, self.fps, self.frame_size, clip.start or 0.0)
        if not self.cache:
            return decode_clip(*args)
        return decoded.get_or_decode(("clip", str(clip.path), *args[1:]), lambda: decode_clip(*args))

    def preload(self) -> None:
        """Decode every clip into the cache now (turns ``cache`` on)."""
        self.cache = True
        for i in range(len(self)):
            self.frames(i)

    def clip_boxes(self, index: int, times: Sequence[float]) -> torch.Tensor:
        """Boxes of the frames shown at ``times``, scaled to ``frame_size``; NaN if the clip has no box file.

        Shape:
            ``(T, 4)``.
        """
        clip = self.clips[index]
        if clip.boxes is None:
            return torch.full((len(times), 4), float("nan"))
        if clip.boxes not in self._boxes:
            self._boxes[clip.boxes] = read_boxes(clip.boxes)
        fps, width, height, boxes = self._boxes[clip.boxes]
        rows = np.clip(np.rint(np.asarray(times) * fps).astype(int), 0, len(boxes) - 1)
        scale = np.array([self.frame_size[1] / width, self.frame_size[0] / height] * 2, dtype=np.float32)
        return torch.from_numpy(boxes[rows] * scale)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        clip = self.clips[index]
        frames, times = self.frames(index)
        target: dict[str, Any] = {
            "label": torch.tensor(self.class_to_index[clip.label], dtype=torch.int64),
            "subject": clip.subject,
            "clip_id": clip.clip_id,
        }
        if self.has_boxes:
            target["boxes"] = tv_tensors.BoundingBoxes(
                self.clip_boxes(index, times), format="XYXY", canvas_size=self.frame_size
            )
        video: Any = tv_tensors.Video(frames)
        if self.transform is None:
            video = frames.float().div(255)
        elif self.has_boxes:
            video, target = self.transform(video, target)
        else:
            video = self.transform(video)
        if "boxes" in target:
            target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3), target
