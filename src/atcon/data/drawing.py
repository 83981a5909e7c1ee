"""Drawing helpers of the generated benchmarks: backgrounds, tinted ink layers, clutter, boxes.

A Fashion-MNIST image is used as *ink*: its grey level sets both the opacity and the shading
of a tint, so a garment keeps its texture in any colour. Images are ``float32`` ``(H, W, 3)``
canvases in [0, 255]; every function draws from the ``numpy`` generator it is given, so a
picture is a pure function of the generator's state.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Source = tuple[np.ndarray, np.ndarray]
"""``(images uint8 (N, h, w), labels int (N,))``, e.g. from :func:`~atcon.data.load_fashion_mnist`."""

INK = 25
"""Grey level above which a Fashion-MNIST pixel counts as part of the object."""


def background(
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


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random saturated colour, ``(3,)`` in [0, 255]."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    return np.array([r, g, b], np.float32) * 255


def ink_layer(patch: np.ndarray, side: tuple[int, int], angle: float = 0.0) -> np.ndarray:
    """Scale (and rotate) a grey patch; returns ``float32`` intensity in [0, 1], shape ``(h, w)``."""
    im = Image.fromarray(patch).resize((side[1], side[0]), Image.Resampling.BILINEAR)
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return np.asarray(im, np.float32) / 255.0


def paste(canvas: np.ndarray, ink: np.ndarray, colour: np.ndarray, top: int, left: int) -> np.ndarray | None:
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
    rows = np.nonzero((part > INK / 255).any(1))[0]
    cols = np.nonzero((part > INK / 255).any(0))[0]
    if rows.size == 0:
        return None
    return np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1], np.float32)


def fragment(rng: np.random.Generator, images: np.ndarray, scale: float) -> np.ndarray:
    """A small piece of a random source image, as an ink layer (clutter without a label)."""
    for _attempt in range(10):  # Fashion-MNIST has empty margins: redraw pieces with little ink
        src = images[int(rng.integers(len(images)))]
        h, w = src.shape
        ch, cw = int(rng.integers(h // 4, h // 2 + 1)), int(rng.integers(w // 4, w // 2 + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        piece = np.ascontiguousarray(src[y : y + ch, x : x + cw])
        if (piece > INK).mean() > 0.3:
            break
    f = float(rng.uniform(1.0, 2.0)) * scale
    return ink_layer(piece, (max(2, round(ch * f)), max(2, round(cw * f))), float(rng.uniform(0, 360)))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes (0 when both are empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ink_box(ink: np.ndarray) -> np.ndarray:
    """Tight ``(x1, y1, x2, y2)`` box of an ink layer's object (the whole layer when it has no ink)."""
    rows = np.nonzero((ink > INK / 255).any(1))[0]
    cols = np.nonzero((ink > INK / 255).any(0))[0]
    if rows.size == 0:
        return np.array([0, 0, ink.shape[1], ink.shape[0]], np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
