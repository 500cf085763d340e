"""Grid tiling of a slide at a target resolution, filtered by tissue.

Tile size and stride are given in output pixels; the level-0 footprint is
``tile_size · downsample`` with ``downsample = target_mpp / slide_mpp``. The grid starts
at level-0 ``(0, 0)`` and has just enough columns / rows to cover the slide, so the last
column / row may hang over the right / bottom edge (the reader pads it with white).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tissue import TissueMask


@dataclass(frozen=True)
class TileRecord:
    """One grid tile.

    Attributes:
        x0, y0: level-0 top-left corner (column, row).
        w0, h0: level-0 footprint (rounded to whole pixels).
        out_w, out_h: tile size in output pixels.
        row, col: position in the grid.
        downsample: level-0 pixels per output pixel.
        mpp: µm per output pixel, or ``None`` for slides without mpp.
        tissue: tissue fraction of the footprint (1.0 when no mask was given).
    """

    x0: int
    y0: int
    w0: int
    h0: int
    out_w: int
    out_h: int
    row: int
    col: int
    downsample: float
    mpp: float | None
    tissue: float = 1.0

    @property
    def frame(self) -> PatchFrame:
        """The tile as a :class:`PatchFrame`."""
        return PatchFrame(float(self.x0), float(self.y0), self.downsample, self.out_w, self.out_h)


def grid_shape(extent0: int, footprint0: float, stride0: float) -> int:
    """Number of tiles along one axis so that ``n`` tiles of ``footprint0`` at ``stride0`` cover ``extent0``.

    ``n = 1 + ceil(max(extent0 - footprint0, 0) / stride0)``.
    """
    return 1 + max(0, math.ceil((extent0 - footprint0) / stride0 - 1e-9))


def grid_tiles(
    reader: SlideReader,
    *,
    tile_size: int,
    mpp: float | None = None,
    downsample: float | None = None,
    overlap: int = 0,
    tissue: TissueMask | None = None,
    min_tissue: float = 0.0,
) -> list[TileRecord]:
    """Tiles of ``tile_size²`` output pixels overlapping by ``overlap`` pixels, row-major.

    Args:
        reader: the slide.
        tile_size: tile side in output pixels.
        mpp: target µm/px (needs the slide's mpp); or give ``downsample``; neither = level 0.
        downsample: target level-0 pixels per output pixel.
        overlap: output pixels shared by neighbouring tiles (stride = tile_size - overlap).
        tissue: tissue mask used for filtering; ``None`` keeps every tile.
        min_tissue: keep tiles whose tissue fraction is ≥ this (needs ``tissue`` when > 0).

    Returns:
        Records in row-major grid order (rows top to bottom, columns left to right).
    """
    if tile_size <= 0 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size} and {overlap}")
    if min_tissue > 0 and tissue is None:
        raise ValueError("min_tissue > 0 needs a tissue mask; pass tissue=detect_tissue(reader)")
    ds, out_mpp = reader.resolve(mpp=mpp, downsample=downsample)
    width, height = reader.dimensions
    foot0, stride0 = tile_size * ds, (tile_size - overlap) * ds
    n_cols, n_rows = grid_shape(width, foot0, stride0), grid_shape(height, foot0, stride0)
    xs = np.rint(np.arange(n_cols) * stride0).astype(int)
    ys = np.rint(np.arange(n_rows) * stride0).astype(int)
    w0 = round(foot0)
    tiles = []
    for row, y0 in enumerate(ys):
        for col, x0 in enumerate(xs):
            fraction = 1.0 if tissue is None else tissue.fraction(x0, y0, w0, w0)
            if tissue is not None and fraction < min_tissue:
                continue
            tiles.append(TileRecord(int(x0), int(y0), w0, w0, tile_size, tile_size, row, col, ds, out_mpp, fraction))
    return tiles


def read_tile(reader: SlideReader, tile: TileRecord) -> np.ndarray:
    """``[out_h, out_w, 3]`` uint8 RGB pixels of ``tile``."""
    return reader.read_frame(tile.frame)
