"""Overlay thumbnail: the slide at low resolution with the predicted classes blended on top.

The class map at thumbnail size is sampled band by band (nearest output pixel under each
thumbnail pixel centre) by :class:`ThumbnailSampler`, so it never needs the full mask.
Blending itself is :func:`pathseg_core.visualize.overlay`, shared with training logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pathseg_core.visualize import overlay


def thumbnail_shape(level0_size: tuple[int, int], max_side: int) -> tuple[float, tuple[int, int]]:
    """Downsample (level-0 px per thumbnail px, ≥ 1) and ``(rows, cols)`` of a thumbnail.

    Args:
        level0_size: ``(width, height)`` of the slide's level 0.
        max_side: longest side of the thumbnail in pixels.
    """
    w, h = level0_size
    ds = max(1.0, max(w, h) / max_side)
    return ds, (int(np.ceil(h / ds)), int(np.ceil(w / ds)))


class ThumbnailSampler:
    """Nearest-neighbour class map at thumbnail size, filled from row bands of the output.

    Args:
        out_shape: ``(rows, cols)`` of the output mask (pixels at the target mpp).
        thumb_shape: ``(rows, cols)`` of the thumbnail.
        scale: output pixels per thumbnail pixel (thumbnail ds / output ds).
    """

    def __init__(self, out_shape: tuple[int, int], thumb_shape: tuple[int, int], scale: float) -> None:
        self.mask = np.zeros(thumb_shape, dtype=np.uint8)
        self.src_rows = np.minimum(((np.arange(thumb_shape[0]) + 0.5) * scale).astype(np.int64), out_shape[0] - 1)
        self.src_cols = np.minimum(((np.arange(thumb_shape[1]) + 0.5) * scale).astype(np.int64), out_shape[1] - 1)
        self.next_row = 0

    def add_band(self, ids: np.ndarray) -> None:
        """Take the thumbnail rows whose source row lies in this ``[h, W]`` band (next rows down)."""
        y0, y1 = self.next_row, self.next_row + ids.shape[0]
        sel = np.nonzero((self.src_rows >= y0) & (self.src_rows < y1))[0]
        if sel.size:
            self.mask[sel] = ids[self.src_rows[sel] - y0][:, self.src_cols]
        self.next_row = y1


def render_overlay(thumbnail: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``[h, w, 3]`` uint8: ``thumbnail`` with ``mask`` classes (not 0) in ``colors`` at ``alpha``."""
    h = min(thumbnail.shape[0], mask.shape[0])
    w = min(thumbnail.shape[1], mask.shape[1])
    return overlay(thumbnail[:h, :w], mask[:h, :w], colors, alpha=alpha)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write ``[h, w, 3]`` uint8 RGB as PNG (no metadata chunks: same pixels → same bytes)."""
    Image.fromarray(image).save(path, format="PNG", compress_level=6)
