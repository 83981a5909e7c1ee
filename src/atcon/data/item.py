"""The item every image reader serves: ``(image, Target)``, with one typed target.

:class:`~atcon.data.voc.VOCDataset` and :class:`~atcon.data.images.AnnotatedImageDataset` (class
folders, CSV manifests, COCO files) build the same target, so training, evaluation and figures
read any of them alike.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torchvision import tv_tensors


class _ImageTarget(TypedDict):
    labels: torch.Tensor
    ignore: torch.Tensor
    boxes: tv_tensors.BoundingBoxes
    box_labels: torch.Tensor
    difficult: torch.Tensor
    avoid: tv_tensors.BoundingBoxes
    group: str
    image_id: str
    orig_size: torch.Tensor


class Target(_ImageTarget, total=False):
    """The target of one image (``C`` classes, ``N`` boxes, ``M`` regions to avoid).

    - ``labels``: ``float32`` multi-hot, ``(C,)``.
    - ``ignore``: ``bool`` ``(C,)``, classes present only as difficult objects.
    - ``boxes``: ``tv_tensors.BoundingBoxes`` ``(N, 4)`` ``float32``, XYXY pixels, ``canvas_size=(H, W)``.
    - ``box_labels``: ``int64`` ``(N,)`` class index of each box.
    - ``difficult``: ``bool`` ``(N,)``.
    - ``avoid``: ``tv_tensors.BoundingBoxes`` ``(M, 4)``, the regions a model must not use, moved with
      the image like ``boxes`` (``M = 0`` without any).
    - ``group``: ``str``, the image's group for per-group metrics (``""`` without one).
    - ``image_id``: ``str``.
    - ``orig_size``: ``int64`` ``(2,)``, ``(H, W)`` of the file, before any transform.
    - ``label``: single-label datasets only: ``int64`` scalar class index.
    """

    label: torch.Tensor


IMAGE_TARGET_KEYS: tuple[str, ...] = tuple(_ImageTarget.__annotations__)
"""The keys every image target has, in order (``label`` comes on top for single-label data)."""
