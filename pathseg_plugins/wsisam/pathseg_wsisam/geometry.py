"""Concentric HR → LR geometry for WSI-SAM prompts and targets, and the typed carriers of LR prompts.

WSI-SAM sees a high-resolution (HR) patch and the concentric low-resolution (LR) patch of
the same pixel size with ``factor`` × the field of view (``factor = 2``: 10x and 5x). An HR
pixel coordinate ``u`` lands at ``u / f + S · (1 - 1/f) / 2`` in the LR patch of side ``S``
(:func:`pathseg_core.data.wsi.samplers.hr_to_context`); at ``S = 1024, f = 2`` this is the
official code's ``box / 2 + 256``.

:class:`DualPrompts` / :class:`DualTargets` extend the core contracts with the LR side, so
a task can hand independently sampled LR prompts (the official code's choice) and LR
targets through the unchanged ``SegmentationTask`` loop; without them the model maps the HR
prompts itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pathseg_core.contracts import PromptError, Prompts, Targets
from pathseg_core.data.wsi.samplers import hr_to_context


class ContextError(ValueError):
    """The low-resolution context patch is missing or does not fit the high-resolution patch."""


@dataclass
class DualPrompts(Prompts):
    """HR prompts plus, optionally, the LR branch's own prompts.

    Attributes:
        context: prompts in the LR (context) patch's pixel frame, or ``None`` to map the HR
            prompts geometrically (:func:`map_prompts`).
    """

    context: Prompts | None = None


@dataclass
class DualTargets(Targets):
    """HR targets plus the per-object LR masks.

    Attributes:
        context_masks: ``[B, N, H, W]`` float in ``{0, 1}``: each prompted object in the LR
            patch (same slots as ``masks``).
    """

    context_masks: Tensor | None = None


def _square_side(size_hw: tuple[int, int]) -> int:
    h, w = size_hw
    if h != w:
        raise ContextError(f"concentric HR/LR mapping needs square patches, got {h}x{w}; tile the slide in squares")
    return int(h)


def map_coords(xy: Tensor, size_hw: tuple[int, int], factor: float, *, floor: bool = False) -> Tensor:
    """``[..., 2k]`` ``xy`` (points) or ``xyxy`` (boxes) HR pixels → LR pixels.

    Args:
        xy: coordinates, last dimension a multiple of 2 in ``x, y`` order.
        size_hw: ``(H, W)`` of both (square) patches.
        factor: LR field of view / HR field of view.
        floor: round down to whole pixels (the official inference script's ``box // 2 + 256``).
    """
    side = _square_side(size_hw)
    out = torch.from_numpy(hr_to_context(xy.detach().cpu().double().numpy(), side, factor)).to(xy)
    return out.floor() if floor else out


def map_masks(masks: Tensor, factor: float, fill: float) -> Tensor:
    """``[..., h, w]`` maps over the HR patch → the same maps placed in the centre of the LR frame.

    Each map is shrunk by ``factor`` (bilinear) and padded with ``fill`` around it, so the
    result covers the LR field of view at the same ``h x w`` size.
    """
    h, w = masks.shape[-2:]
    sh, sw = max(1, round(h / factor)), max(1, round(w / factor))
    flat = masks.reshape(-1, 1, h, w).float()
    small = F.interpolate(flat, size=(sh, sw), mode="bilinear", align_corners=False)
    top, left = (h - sh) // 2, (w - sw) // 2
    out = F.pad(small, (left, w - sw - left, top, h - sh - top), value=fill)
    return out.reshape(*masks.shape[:-2], h, w).to(masks.dtype)


def map_prompts(
    prompts: Prompts, size_hw: tuple[int, int], factor: float, *, floor_boxes: bool = False, mask_fill: float = -20.0
) -> Prompts:
    """HR prompts → LR prompts by the concentric geometry (boxes, points, coarse masks).

    Args:
        prompts: prompts in the HR patch (``xyxy`` / ``xy`` pixels; masks over the patch).
        size_hw: ``(H, W)`` of the patches.
        factor: LR field of view / HR field of view.
        floor_boxes: floor the mapped boxes (official inference) instead of keeping floats.
        mask_fill: logit written around a shrunk mask prompt (background).
    """
    return Prompts(
        boxes=None if prompts.boxes is None else map_coords(prompts.boxes, size_hw, factor, floor=floor_boxes),
        points=None if prompts.points is None else map_coords(prompts.points, size_hw, factor),
        point_labels=prompts.point_labels,
        masks=None if prompts.masks is None else map_masks(prompts.masks, factor, mask_fill),
        valid=prompts.valid,
        kind=prompts.kind,
    )


def check_points_inside(prompts: Prompts, size_hw: tuple[int, int], where: str) -> None:
    """Raise :class:`PromptError` (one line) if a real point lies outside the ``H x W`` patch."""
    if prompts.points is None or prompts.point_labels is None:
        return
    h, w = size_hw
    real = prompts.point_labels >= 0
    if prompts.valid is not None:
        real = real & prompts.valid[..., None]
    pts = prompts.points[real]
    if pts.numel() and (
        pts[:, 0].min() < -0.5 or pts[:, 0].max() > w + 0.5 or pts[:, 1].min() < -0.5 or pts[:, 1].max() > h + 0.5
    ):
        raise PromptError(f"points fall outside the {w}x{h} {where} they prompt; give xy pixels inside the patch")
