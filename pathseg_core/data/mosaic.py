"""Stitch overlapping tiles of one region back into one canvas, and cut it without leaks.

Some datasets ship one annotated region as overlapping tiles (BCSS here: five 1024²
tiles at x offsets 0, 512, …, 2048 of one 1024 × 3072 strip). Splitting such *tiles*
between train and test leaks pixels. Instead :func:`stitch_tiles` rebuilds the canvas
(checking that overlapping pixels agree), and :func:`crop_regions` cuts it into
contiguous ranges along one axis, separated by a ``gap`` of unused pixels, from which
the dataset then samples patches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pathseg_core.data.splits import SplitError, proportional_counts
from pathseg_core.data.tile_io import read_label_mask, read_rgb


class MosaicError(ValueError):
    """Tiles cannot be stitched (no offset in the name, disagreeing overlaps, holes)."""


@dataclass(frozen=True)
class Region:
    """A rectangle of a canvas in pixels: columns ``[x0, x1)``, rows ``[y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        """``x1 - x0``."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """``y1 - y0``."""
        return self.y1 - self.y0

    def overlaps(self, other: Region) -> bool:
        """Whether the two rectangles share at least one pixel."""
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


@dataclass
class Mosaic:
    """One stitched region.

    Attributes:
        source_id: name of the region (the tiles' common group key).
        image: ``[H, W, 3]`` uint8 RGB canvas.
        mask: ``[H, W]`` raw label codes (the tiles' dtype), or ``None`` without masks.
        offsets: tile stem → ``(x, y)`` top-left of that tile in the canvas.
    """

    source_id: str
    image: np.ndarray
    mask: np.ndarray | None
    offsets: dict[str, tuple[int, int]]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the canvas."""
        return int(self.image.shape[0]), int(self.image.shape[1])


def tile_offset(stem: str, pattern: str) -> tuple[int, int]:
    r"""``(x, y)`` pixel offset of a tile from its name.

    ``pattern`` has either one unnamed group (the x offset, e.g. ``r"-(\\d+)$"``) or named
    groups ``x`` and/or ``y``.
    """
    regex = re.compile(pattern)
    match = regex.search(stem)
    if match is None:
        raise MosaicError(f"stem {stem!r} does not match the offset pattern {pattern!r}; fix the pattern or the name")
    if regex.groupindex:
        found = match.groupdict()
        return int(found.get("x") or 0), int(found.get("y") or 0)
    if regex.groups != 1:
        raise MosaicError(f"offset pattern {pattern!r} needs one group (x offset) or named groups x / y")
    return int(match.group(1)), 0


def _paste(canvas: np.ndarray, filled: np.ndarray, tile: np.ndarray, x: int, y: int, what: str, atol: int) -> None:
    h, w = tile.shape[:2]
    window, seen = canvas[y : y + h, x : x + w], filled[y : y + h, x : x + w]
    if seen.any():
        old, new = window[seen].astype(np.int64), tile[seen].astype(np.int64)
        diff = int(np.abs(old - new).max())
        if diff > atol:
            raise MosaicError(
                f"{what} disagrees with the tiles it overlaps (max difference {diff} > {atol}); not one region?"
            )
    window[...] = tile
    seen[...] = True


def stitch_tiles(
    image_paths: Sequence[str | Path],
    mask_paths: Sequence[str | Path] | None,
    offset_pattern: str,
    source_id: str,
    image_atol: int = 0,
) -> Mosaic:
    """Stitch tiles of one region into one canvas.

    Args:
        image_paths: RGB tiles; their offsets come from the file stems.
        mask_paths: label masks in the same order (same stems), or ``None``.
        offset_pattern: see :func:`tile_offset`.
        source_id: name given to the mosaic.
        image_atol: largest allowed difference of overlapping image pixels (0 for
            lossless PNG; raise it for JPEG tiles). Mask overlaps must agree exactly.

    Raises:
        MosaicError: overlaps disagree, tiles leave holes, or stems do not pair up.
    """
    if not image_paths:
        raise MosaicError(f"no tiles to stitch for {source_id!r}")
    if mask_paths is not None and [Path(p).stem for p in mask_paths] != [Path(p).stem for p in image_paths]:
        raise MosaicError(f"image and mask tiles of {source_id!r} do not pair up by stem")
    offsets = {Path(p).stem: tile_offset(Path(p).stem, offset_pattern) for p in image_paths}
    images = [read_rgb(p) for p in image_paths]
    sizes = {(x + im.shape[1], y + im.shape[0]) for (x, y), im in zip(offsets.values(), images)}
    width, height = max(s[0] for s in sizes), max(s[1] for s in sizes)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    filled = np.zeros((height, width), dtype=bool)
    for path, (x, y), im in zip(image_paths, offsets.values(), images):
        _paste(canvas, filled, im, x, y, f"image tile {path}", image_atol)
    if not filled.all():
        raise MosaicError(
            f"tiles of {source_id!r} leave {int((~filled).sum())} canvas pixels uncovered; a tile is missing"
        )
    mask = None
    if mask_paths is not None:
        masks = [read_label_mask(p) for p in mask_paths]
        mask = np.zeros((height, width), dtype=masks[0].dtype)
        filled[...] = False
        for path, (x, y), m, im in zip(mask_paths, offsets.values(), masks, images):
            if m.shape != im.shape[:2]:
                raise MosaicError(f"mask tile {path} is {list(m.shape)} but its image is {list(im.shape[:2])}")
            _paste(mask, filled, m, x, y, f"mask tile {path}", 0)
    return Mosaic(source_id=source_id, image=canvas, mask=mask, offsets=offsets)


def crop_regions(
    width: int,
    height: int,
    fractions: Mapping[str, float],
    gap: int,
    axis: Literal["x", "y"] = "x",
) -> dict[str, Region]:
    """Cut a ``width`` × ``height`` canvas into contiguous ranges along ``axis``, ``gap`` pixels apart.

    Ranges follow the order of ``fractions`` (e.g. ``{"train": .8, "val": .2}``: train on the
    left); each gets its share of the length left after the gaps. Splits with share 0 are
    left out. Consecutive ranges are separated by ``gap`` unused pixels, so no two share
    a pixel (nor any patch sampled inside them).

    Raises:
        SplitError: the gaps leave no room, or a range would be empty.
    """
    wanted = {k: f for k, f in fractions.items() if f > 0}
    length = width if axis == "x" else height
    usable = length - gap * (len(wanted) - 1)
    if gap < 0 or usable < len(wanted):
        raise SplitError(f"a {length} px canvas cannot hold {len(wanted)} ranges with {gap} px gaps; lower the gap")
    sizes = proportional_counts(usable, wanted)
    regions: dict[str, Region] = {}
    start = 0
    for name, size in sizes.items():
        stop = start + size
        regions[name] = Region(start, 0, stop, height) if axis == "x" else Region(0, start, width, stop)
        start = stop + gap
    return regions
