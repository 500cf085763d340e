"""What to run on a slide: work units (tiles or prompt windows) grouped into row bands.

Frames. The *output frame* is the slide at the target mpp: output pixel ``(row, col)``
covers level-0 ``[col·ds, (col+1)·ds) × [row·ds, (row+1)·ds)`` with
``ds = target_mpp / slide_mpp``, and the output mask is ``ceil(H0 / ds) × ceil(W0 / ds)``.

Bands. With stride ``S = tile_size - overlap``, band ``k`` holds every unit whose top
row ``y`` satisfies ``k·S <= y < (k+1)·S`` (the last band takes the rest). Once band ``k``
is processed no later unit can touch a row above ``(k+1)·S``, so those rows are final.
For the tile grid, band ``k`` is exactly tile row ``k``.

Units. A grid tile covers ``tile_size²`` output pixels at ``(y, x) = (row·S, col·S)``.
A prompt window is a square of ``side`` output pixels centred on the prompt (``side`` =
``tile_size``, or larger when the prompt does not fit with its margin; the window is then
read coarser into ``tile_size²`` pixels and the prediction resized back). The prompt is
given in the model-input pixels of its window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pathseg_core.data.wsi.errors import ResolutionError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tiling import grid_shape, grid_tiles
from pathseg_core.data.wsi.tissue import TissueMask


@dataclass(frozen=True)
class SlidePrompt:
    """One prompt in level-0 pixels.

    Attributes:
        class_id: output class painted where the prompted mask is on.
        box: ``(x0, y0, x1, y1)`` level-0 box, or ``None``.
        points: level-0 ``xy`` points, or empty.
        labels: 1 (positive) / 0 (negative) per point.
    """

    class_id: int
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()

    def bounds(self) -> tuple[float, float, float, float]:
        """Level-0 ``xyxy`` extent of the box and points together."""
        xs: list[float] = []
        ys: list[float] = []
        if self.box is not None:
            xs += [self.box[0], self.box[2]]
            ys += [self.box[1], self.box[3]]
        for px, py in self.points:
            xs.append(px)
            ys.append(py)
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class WorkUnit:
    """One model input: where it is read from and where its prediction goes.

    Attributes:
        y, x: output-frame row / column of the covered square's top-left corner.
        side: output pixels covered per side (``tile_size`` for grid tiles).
        band: row band the unit belongs to.
        frame: what to read: level-0 corner, downsample, ``tile_size²`` pixels.
        prompt: the prompt in ``frame`` pixels (promptable models), else ``None``.
    """

    y: int
    x: int
    side: int
    band: int
    frame: PatchFrame
    prompt: SlidePrompt | None = None

    def key(self) -> list:
        """JSON-able identity (for the resume signature)."""
        p = self.prompt
        extra = [] if p is None else [p.class_id, p.box, [list(q) for q in p.points], list(p.labels)]
        return [self.y, self.x, self.side, self.band, *extra]


@dataclass
class SlidePlan:
    """Everything about a slide's run that does not involve the model.

    Attributes:
        downsample: level-0 pixels per output pixel.
        target_mpp: µm per output pixel (``downsample · slide mpp``).
        out_shape: ``(rows, cols)`` of the output mask.
        tile_size: model input side in pixels.
        stride: band height ``tile_size - overlap``.
        n_bands: number of row bands.
        units: work units ordered by band (then as built).
        tissue_fraction: share of the slide the tissue mask covers (1.0 for prompts).
    """

    downsample: float
    target_mpp: float
    out_shape: tuple[int, int]
    tile_size: int
    stride: int
    n_bands: int
    units: list[WorkUnit] = field(default_factory=list)
    tissue_fraction: float = 1.0
    _by_band: dict[int, list[WorkUnit]] | None = field(default=None, init=False, repr=False)

    def band_rows(self, k: int) -> tuple[int, int]:
        """Output rows ``[start, stop)`` that are final once band ``k`` is done."""
        start = min(k * self.stride, self.out_shape[0])
        stop = self.out_shape[0] if k == self.n_bands - 1 else min((k + 1) * self.stride, self.out_shape[0])
        return start, stop

    def units_of(self, k: int) -> list[WorkUnit]:
        """Units of band ``k`` in run order."""
        if self._by_band is None:
            self._by_band = {}
            for unit in self.units:
                self._by_band.setdefault(unit.band, []).append(unit)
        return self._by_band.get(k, [])


def output_geometry(reader: SlideReader, target_mpp: float) -> tuple[float, tuple[int, int]]:
    """``(downsample, (rows, cols))`` of the output frame; refuses a target finer than level 0."""
    ds = reader.downsample_for(target_mpp)
    if ds * (1.0 + reader.tolerance) < 1.0:
        raise ResolutionError(
            f"target mpp {target_mpp:g} is finer than level 0 of {reader.path} ({reader.require_mpp():g} µm/px); "
            f"pass --target-mpp >= {reader.require_mpp():g}"
        )
    ds = max(ds, 1.0)  # within the tolerance of level 0: read level 0 as it is
    w0, h0 = reader.dimensions
    return ds, (max(1, math.ceil(h0 / ds - 1e-9)), max(1, math.ceil(w0 / ds - 1e-9)))


def _n_bands(reader: SlideReader, ds: float, tile_size: int, overlap: int) -> int:
    return grid_shape(reader.dimensions[1], tile_size * ds, (tile_size - overlap) * ds)


def plan_grid(
    reader: SlideReader,
    target_mpp: float,
    tile_size: int,
    overlap: int,
    tissue: TissueMask | None,
    min_tissue: float,
) -> SlidePlan:
    """Tissue tiles on the regular grid (semantic models); one band per tile row."""
    ds, shape = output_geometry(reader, target_mpp)
    stride = tile_size - overlap
    tiles = grid_tiles(
        reader, tile_size=tile_size, downsample=ds, overlap=overlap, tissue=tissue, min_tissue=min_tissue
    )
    units = [WorkUnit(t.row * stride, t.col * stride, tile_size, t.row, t.frame) for t in tiles]
    fraction = 1.0 if tissue is None else tissue.area_fraction
    return SlidePlan(
        ds,
        ds * reader.require_mpp(),
        shape,
        tile_size,
        stride,
        _n_bands(reader, ds, tile_size, overlap),
        units,
        fraction,
    )


def _to_frame(prompt: SlidePrompt, frame: PatchFrame) -> SlidePrompt:
    box = None if prompt.box is None else tuple(float(v) for v in frame.boxes_from_level0(np.asarray(prompt.box)))
    pts = tuple(tuple(float(v) for v in frame.from_level0(np.asarray(p))) for p in prompt.points)
    return SlidePrompt(prompt.class_id, box, pts, prompt.labels)


def plan_prompts(
    reader: SlideReader,
    target_mpp: float,
    tile_size: int,
    overlap: int,
    prompts: list[SlidePrompt],
    margin: float = 0.25,
) -> SlidePlan:
    """One window per prompt, ``tile_size`` wide or wider to fit the prompt with ``margin`` on each side.

    Args:
        reader: the slide.
        target_mpp: model resolution.
        tile_size: model input side.
        overlap: sets the band height ``tile_size - overlap`` (as for the grid).
        prompts: level-0 prompts, each inside the slide.
        margin: context around the prompt's extent, as a fraction of that extent per side.
    """
    ds, (h, w) = output_geometry(reader, target_mpp)
    stride = tile_size - overlap
    n_bands = _n_bands(reader, ds, tile_size, overlap)
    units = []
    for prompt in prompts:
        x0, y0, x1, y1 = (v / ds for v in prompt.bounds())
        extent = max(x1 - x0, y1 - y0, 1.0) * (1.0 + 2.0 * margin)
        side = max(tile_size, math.ceil(extent))
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        x = min(max(round(cx - side / 2.0), 0), max(w - side, 0))
        y = min(max(round(cy - side / 2.0), 0), max(h - side, 0))
        frame = PatchFrame(x * ds, y * ds, ds * side / tile_size, tile_size, tile_size)
        units.append(WorkUnit(y, x, side, min(y // stride, n_bands - 1), frame, _to_frame(prompt, frame)))
    units.sort(key=lambda u: (u.band, u.y, u.x))
    return SlidePlan(ds, ds * reader.require_mpp(), (h, w), tile_size, stride, n_bands, units)
