"""Annotations as prompts: QuPath boxes / polygons → boxes, points → points, in a patch's frame.

Rectangles and polygons become their bounding box (``xyxy``); ``Point`` / ``MultiPoint``
annotations become one positive point per vertex (``xy``). Coordinates are patch pixels
of the given :class:`~pathseg_core.data.wsi.frames.PatchFrame` (continuous, pixel
``(c, r)`` covers ``[c, c + 1) × [r, r + 1)``), the convention of
:class:`~pathseg_core.contracts.Prompts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
import torch
from torch import Tensor

from pathseg_core.contracts import Prompts
from pathseg_core.data.wsi.annotations import Annotation
from pathseg_core.data.wsi.frames import PatchFrame


@dataclass(frozen=True)
class PatchPrompts:
    """Prompts of one patch.

    Attributes:
        boxes: ``[N, 4]`` float32 ``xyxy`` patch pixels, clipped to the patch.
        box_classes: ``[N]`` long class ids (``-1``: unclassified).
        points: ``[M, 2]`` float32 ``xy`` patch pixels, inside the patch.
        point_classes: ``[M]`` long class ids (``-1``: unclassified).
    """

    boxes: Tensor
    box_classes: Tensor
    points: Tensor
    point_classes: Tensor


def annotation_prompts(
    annotations: Iterable[Annotation], frame: PatchFrame, *, min_box_px: float = 1.0
) -> PatchPrompts:
    """Boxes of area annotations and points of point annotations that fall in ``frame``.

    Args:
        annotations: level-0 annotations (e.g. ``AnnotationIndex.query(frame.bounds)``).
        frame: the patch.
        min_box_px: boxes narrower or shorter than this after clipping are dropped.
    """
    boxes, box_classes, points, point_classes = [], [], [], []
    for annotation in annotations:
        cls = -1 if annotation.class_id is None else int(annotation.class_id)
        if annotation.is_area:
            box = frame.boxes_from_level0(np.asarray(annotation.geometry.bounds))
            box[0::2] = box[0::2].clip(0, frame.width)
            box[1::2] = box[1::2].clip(0, frame.height)
            if box[2] - box[0] >= min_box_px and box[3] - box[1] >= min_box_px:
                boxes.append(box)
                box_classes.append(cls)
        elif annotation.is_point:
            xy = frame.from_level0(shapely.get_coordinates(annotation.geometry))
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < frame.width) & (xy[:, 1] >= 0) & (xy[:, 1] < frame.height)
            points.extend(xy[inside])
            point_classes.extend([cls] * int(inside.sum()))
    return PatchPrompts(
        boxes=torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
        box_classes=torch.as_tensor(box_classes, dtype=torch.long),
        points=torch.as_tensor(np.asarray(points, dtype=np.float32).reshape(-1, 2)),
        point_classes=torch.as_tensor(point_classes, dtype=torch.long),
    )


def stack_prompts(items: Sequence[PatchPrompts], kind: Literal["boxes", "points"] = "boxes") -> Prompts:
    """Pad per-patch prompts to one :class:`Prompts` for a batch of ``B = len(items)``.

    ``"boxes"``: ``boxes`` ``[B, N, 4]``; ``"points"``: each point is its own object,
    ``points`` ``[B, N, 1, 2]`` with labels ``[B, N, 1]`` (1 = positive, -1 = padding).
    ``valid`` ``[B, N]`` marks real slots; ``N`` is the largest count (at least 1).
    """
    counts = [len(p.boxes) if kind == "boxes" else len(p.points) for p in items]
    b, n = len(items), max([1, *counts])
    valid = torch.zeros(b, n, dtype=torch.bool)
    if kind == "boxes":
        boxes = torch.zeros(b, n, 4)
        for i, p in enumerate(items):
            boxes[i, : counts[i]] = p.boxes
            valid[i, : counts[i]] = True
        return Prompts(boxes=boxes, valid=valid)
    points = torch.zeros(b, n, 1, 2)
    labels = torch.full((b, n, 1), -1, dtype=torch.long)
    for i, p in enumerate(items):
        points[i, : counts[i], 0] = p.points
        labels[i, : counts[i], 0] = 1
        valid[i, : counts[i]] = True
    return Prompts(points=points, point_labels=labels, valid=valid)
