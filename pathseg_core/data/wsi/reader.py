"""``SlideReader``: regions of a whole-slide image at a physical resolution.

Coordinates: ``x, y`` are ALWAYS level-0 pixels (column, row) of the top-left corner;
``w, h`` are output pixels at the requested resolution. The reader picks the coarsest
pyramid level that is still at least as fine as the request (within ``tolerance``),
reads it, and resamples the rest with ``cv2.INTER_AREA``. Parts of a region outside the
slide are filled with ``fill`` (white by default) before resampling, so borders blend
exactly as the slide edge would. A level box larger than ``max_read_pixels`` (a whole
single-level slide read for a thumbnail) is read and resampled in horizontal strips, so
memory is the output plus one strip whatever the slide's area.

The file is opened lazily on first use and once per process: pickling drops the handle
(DataLoader workers re-open), and a forked child that inherits a handle re-opens too,
because file offsets shared across ``fork`` race.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pathseg_core.data.wsi.backends import Backend, open_backend
from pathseg_core.data.wsi.errors import MppMissingError, ResolutionError, SlideNotFoundError
from pathseg_core.data.wsi.frames import PatchFrame

BackendName = Literal["auto", "openslide", "tifffile"]

#: Level pixels (``lw · lh``) above which :meth:`SlideReader.read_scaled` reads the level
#: box in horizontal strips instead of whole. 2 Mpx keeps tiles and 1024² context patches
#: on the one-shot path; a read costs ~17 bytes per level pixel while it is decoded
#: (OpenSlide's RGBA buffers, RGB; measured with tracemalloc), i.e. ~35 MiB per strip.
MAX_READ_PIXELS = 1 << 21

#: Level pixels converted to float32 at once by the non-integer strip path (12 B each).
_FLOAT_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class SlideInfo:
    """Geometry of an opened slide.

    Attributes:
        level_dimensions: ``(width, height)`` of each level, finest first.
        level_downsamples: level-0 pixels per level pixel, per level.
        metadata_mpp: microns per level-0 pixel read from the file, or ``None``.
        backend: ``"openslide"`` or ``"tifffile"``.
    """

    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    metadata_mpp: float | None
    backend: str


class SlideReader:
    """Read RGB regions of one slide at a target mpp, downsample or pyramid level.

    Args:
        path: slide file (SVS, NDPI, MRXS, tiled TIFF, OME-TIFF …).
        mpp: microns per level-0 pixel, overriding (or standing in for) the metadata.
        backend: ``"auto"`` tries OpenSlide then tifffile.
        fill: grey value (0..255) for regions outside the slide and transparent pixels.
        tolerance: relative slack when matching a level to a request: a level whose
            downsample is within ``(1 + tolerance)`` of the requested one is read natively.
        max_read_pixels: level pixels above which a resampled read goes in horizontal
            strips (attribute of the same name; see :data:`MAX_READ_PIXELS`).

    Raises:
        SlideNotFoundError: ``path`` does not exist (checked at construction; the file
            itself is opened on first use).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mpp: float | None = None,
        backend: BackendName = "auto",
        fill: int = 255,
        tolerance: float = 0.02,
        max_read_pixels: int = MAX_READ_PIXELS,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideNotFoundError(f"slide {self.path} does not exist; check the path")
        if mpp is not None and not mpp > 0:
            raise ValueError(f"mpp override for {self.path} must be > 0, got {mpp}")
        if not 0 <= fill <= 255:
            raise ValueError(f"fill must be a grey value 0..255, got {fill}")
        self.mpp_override = mpp
        self.backend_name: BackendName = backend
        self.fill = int(fill)
        self.tolerance = float(tolerance)
        if max_read_pixels < 1:
            raise ValueError(f"max_read_pixels must be >= 1, got {max_read_pixels}")
        self.max_read_pixels = int(max_read_pixels)
        self._backend: Backend | None = None
        self._pid: int | None = None
        self._info: SlideInfo | None = None

    # ------------------------------------------------------------------ handle lifecycle
    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_backend"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SlideReader({str(self.path)!r}, mpp={self.mpp_override})"

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open handle."""
        return self._backend is not None and self._pid == os.getpid()

    def close(self) -> None:
        """Close the handle (if this process opened it); the next read re-opens."""
        if self._backend is not None and self._pid == os.getpid():
            self._backend.close()
        self._backend = None
        self._pid = None

    def _handle(self) -> Backend:
        if self._backend is None or self._pid != os.getpid():
            self._backend = open_backend(self.path, self.backend_name)
            self._pid = os.getpid()
            b = self._backend
            self._info = SlideInfo(
                level_dimensions=tuple(tuple(d) for d in b.level_dimensions),  # type: ignore[misc]
                level_downsamples=tuple(b.level_downsamples),
                metadata_mpp=b.mpp,
                backend=b.name,
            )
        return self._backend

    # ------------------------------------------------------------------ metadata
    @property
    def info(self) -> SlideInfo:
        """Level geometry and metadata mpp (opens the slide if needed)."""
        if self._info is None:
            self._handle()
        assert self._info is not None
        return self._info

    @property
    def source_id(self) -> str:
        """Identifier used in batch metadata: the file name without its extension."""
        return self.path.stem

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.info.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.info.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` per level, finest first."""
        return self.info.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel, per level."""
        return self.info.level_downsamples

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel: the override, else the metadata, else ``None``."""
        return self.mpp_override if self.mpp_override is not None else self.info.metadata_mpp

    def require_mpp(self) -> float:
        """The level-0 mpp, or :class:`MppMissingError` when neither metadata nor override gives one."""
        mpp = self.mpp
        if mpp is None:
            raise MppMissingError(f"slide {self.path} has no mpp in its metadata; pass --mpp (µm per level-0 pixel)")
        return mpp

    def downsample_for(self, mpp: float) -> float:
        """Level-0 pixels per output pixel at ``mpp`` µm/px (needs the slide's mpp)."""
        if not mpp > 0:
            raise ValueError(f"target mpp must be > 0, got {mpp}")
        return mpp / self.require_mpp()

    def resolve(self, *, mpp: float | None = None, downsample: float | None = None) -> tuple[float, float | None]:
        """``(downsample, mpp)`` of a request given by ``mpp`` or ``downsample`` (neither: level 0).

        The returned mpp is ``None`` when the slide has no mpp and the request was a downsample.
        """
        if mpp is not None and downsample is not None:
            raise ValueError("give mpp or downsample, not both")
        if mpp is not None:
            return self.downsample_for(mpp), float(mpp)
        downsample = 1.0 if downsample is None else float(downsample)
        if not downsample > 0:
            raise ValueError(f"downsample must be > 0, got {downsample}")
        return downsample, None if self.mpp is None else self.mpp * downsample

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is ≤ ``downsample · (1 + tolerance)``."""
        limit = downsample * (1.0 + self.tolerance)
        fine_enough = [i for i, d in enumerate(self.level_downsamples) if d <= limit]
        return max(fine_enough, key=lambda i: self.level_downsamples[i]) if fine_enough else 0

    # ------------------------------------------------------------------ reading
    def read_region(
        self,
        x: float,
        y: float,
        w: int,
        h: int,
        *,
        mpp: float | None = None,
        level: int | None = None,
        downsample: float | None = None,
    ) -> np.ndarray:
        """Read a region as ``[h, w, 3]`` uint8 RGB.

        Args:
            x: left edge in level-0 pixels (may lie outside the slide).
            y: top edge in level-0 pixels.
            w: output width in pixels at the requested resolution.
            h: output height in pixels.
            mpp: target microns per pixel (needs the slide's mpp).
            level: read this pyramid level natively (``w, h`` in its pixels).
            downsample: target level-0 pixels per output pixel (no mpp needed).
                At most one of ``mpp``, ``level``, ``downsample``; none means level 0.

        Raises:
            MppMissingError: ``mpp`` requested on a slide without mpp.
            ResolutionError: the request is finer than level 0.
            SlideFormatError: the file cannot be decoded there (truncated / corrupt).
        """
        if sum(v is not None for v in (mpp, level, downsample)) > 1:
            raise ValueError("give at most one of mpp, level, downsample")
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got w={w} h={h}")
        if level is not None:
            if not 0 <= level < self.level_count:
                raise ResolutionError(f"slide {self.path} has levels 0..{self.level_count - 1}, not {level}")
            ds = self.level_downsamples[level]
            return self._read_level(level, round(x / ds), round(y / ds), w, h)
        if mpp is not None:
            downsample = self.downsample_for(mpp)
        return self.read_scaled(x, y, w, h, 1.0 if downsample is None else downsample)

    def read_scaled(self, x: float, y: float, w: int, h: int, downsample: float) -> np.ndarray:
        """``[h, w, 3]`` uint8 RGB of the region whose level-0 footprint is ``w·downsample × h·downsample``.

        The level box is resampled with ``cv2.INTER_AREA``; a box of more than
        ``max_read_pixels`` level pixels is read in strips (see :meth:`_resize_in_strips`).
        """
        if not downsample * (1.0 + self.tolerance) >= 1.0:
            fine = f"{self.mpp * downsample:.4g} µm/px" if self.mpp else f"downsample {downsample:.4g}"
            raise ResolutionError(
                f"{fine} is finer than level 0 of slide {self.path}; request a resolution ≥ level 0 (no upsampling)"
            )
        level = self.best_level(downsample)
        level_ds = self.level_downsamples[level]
        lx, ly = round(x / level_ds), round(y / level_ds)
        if abs(level_ds / downsample - 1.0) <= self.tolerance:
            return self._read_level(level, lx, ly, w, h)
        scale = downsample / level_ds
        lw, lh = max(1, round(w * scale)), max(1, round(h * scale))
        if lw * lh > self.max_read_pixels and lw >= w and lh >= h:
            return self._resize_in_strips(level, lx, ly, lw, lh, w, h)
        region = self._read_level(level, lx, ly, lw, lh)
        return cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)

    def _resize_in_strips(self, level: int, x: int, y: int, lw: int, lh: int, w: int, h: int) -> np.ndarray:
        """``cv2.resize(level box, (w, h), INTER_AREA)`` computed from horizontal strips of the box.

        Each strip holds at most ``max_read_pixels`` level pixels, or the fewest rows one
        output row needs (``⌈lh / h⌉ + 1``) when a single level row is wider than that.
        Every strip spans the whole box width, so the column weights are the one-shot ones.

        * Integer vertical factor ``k`` (OpenCV uses exactly ``k`` as its scale): strips of
          a multiple of ``k`` level rows start on output rows, each ``cv2.resize``-d to its
          output rows; OpenCV computes every output row from its own ``k`` level rows with
          the same weights either way, so the result is **identical** to the one-shot read.
        * Otherwise the vertical pass follows OpenCV's area weights
          (``computeResizeAreaTab``): strips cover whole output rows (level rows on a
          boundary are read by both neighbours), columns are resampled unrounded in
          float32, rows summed in float32 in OpenCV's order and rounded half-to-even.
          With OpenCV 5.0 on x86-64 this is bit-identical too (tests/test_reader_strips.py);
          another build may round differently (vectorised / fused multiply-add sums), so
          the guarantee is a difference of **at most 1 grey level** from the one-shot read.

        Both hold for exact level pixels (tifffile, OpenSlide on level 0 or on levels whose
        size is an exact fraction of level 0). On other OpenSlide levels each read is
        resampled by a sub-pixel shift that depends on where it starts (see
        :class:`~pathseg_core.data.wsi.backends.OpenSlideBackend`), so strips differ from
        one big read by that shift (mean < 1 grey level on the tests' generated pyramid).
        """
        out = np.empty((h, w, 3), dtype=np.uint8)
        rows_budget = max(1, self.max_read_pixels // lw)
        k = _area_fast_scale(lh, h)
        if k is not None:
            step = max(1, rows_budget // k)  # output rows per strip
            for r0 in range(0, h, step):
                r1 = min(h, r0 + step)
                strip = self._read_level(level, x, y + r0 * k, lw, (r1 - r0) * k)
                out[r0:r1] = cv2.resize(strip, (w, r1 - r0), interpolation=cv2.INTER_AREA)
            return out
        index, weight = _area_table(lh, h)
        first, last = index[:, 0], index.max(axis=1)
        r0 = 0
        while r0 < h:
            # the most output rows whose level rows fit the budget (at least one)
            r1 = max(r0 + 1, int(np.searchsorted(last, first[r0] + rows_budget - 1, side="right")))
            top, bottom = int(first[r0]), int(last[r1 - 1]) + 1
            cols = _area_columns(self._read_level(level, x, y + top, lw, bottom - top), w)
            rows = index[r0:r1] - top
            acc = cols[rows[:, 0]] * weight[r0:r1, 0, None, None]
            for e in range(1, index.shape[1]):
                acc += cols[rows[:, e]] * weight[r0:r1, e, None, None]
            out[r0:r1] = np.clip(np.rint(acc), 0, 255)
            r0 = r1
        return out

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Box in level pixels; the part outside the level is ``fill``."""
        backend = self._handle()
        lw, lh = self.level_dimensions[level]
        xa, ya, xb, yb = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if xa == x and ya == y and xb == x + w and yb == y + h:
            return backend.read(level, x, y, w, h, self.fill)
        out = np.full((h, w, 3), self.fill, dtype=np.uint8)
        if xb > xa and yb > ya:
            out[ya - y : yb - y, xa - x : xb - x] = backend.read(level, xa, ya, xb - xa, yb - ya, self.fill)
        return out

    def snap_frame(self, frame: PatchFrame) -> PatchFrame:
        """``frame`` moved onto the pixel grid of the level :meth:`read_frame` will read.

        The reader starts every read at a whole pixel of the chosen level, so a corner
        between grid points is rounded (by up to half a level pixel). Snapping first makes
        the frame say exactly where the pixels come from, so labels or prompts computed
        from it line up with the image.
        """
        level_ds = self.level_downsamples[self.best_level(frame.downsample)]
        return replace(frame, x0=round(frame.x0 / level_ds) * level_ds, y0=round(frame.y0 / level_ds) * level_ds)

    def read_frame(self, frame: PatchFrame) -> np.ndarray:
        """``[frame.height, frame.width, 3]`` uint8 RGB pixels of a :class:`PatchFrame` (see :meth:`snap_frame`)."""
        return self.read_scaled(frame.x0, frame.y0, frame.width, frame.height, frame.downsample)

    def read_thumbnail(self, downsample: float) -> np.ndarray:
        """The whole slide at ``downsample``: ``[ceil(H / ds), ceil(W / ds), 3]`` uint8 RGB."""
        width, height = self.dimensions
        return self.read_scaled(0, 0, math.ceil(width / downsample), math.ceil(height / downsample), downsample)


# ---------------------------------------------------------------------------- strip resampling
def _area_fast_scale(src: int, dst: int) -> int | None:
    """The integer factor when OpenCV's INTER_AREA treats ``src → dst`` as one, else ``None``.

    ``cv2.resize`` computes the scale as ``1 / (dst / src)`` and takes its block-mean path
    only when that is within ``DBL_EPSILON`` of an integer.
    """
    scale = 1.0 / (dst / src)
    k = round(scale)
    return k if abs(scale - k) < sys.float_info.epsilon else None


def _area_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """INTER_AREA weights of ``src → dst`` samples (``src ≥ dst``) as OpenCV computes them.

    Output sample ``i`` averages the input interval ``[i·s, (i+1)·s)``, ``s = src / dst``,
    each input sample weighted by its overlap (``computeResizeAreaTab`` of OpenCV's general
    area path, in double precision, weights cast to float32).

    Returns:
        ``(index, weight)``, both ``[dst, n]``: output ``i`` is ``Σ_e weight[i, e] ·
        input[index[i, e]]`` summed in order of ``e``; indices ascend along a row and short
        rows are padded with their first index at weight 0 (adding ``+0.0`` is exact).
    """
    scale = 1.0 / (dst / src)
    f1 = np.arange(dst, dtype=np.float64) * scale
    f2 = f1 + scale
    cell = np.minimum(scale, src - f1)
    s2 = np.minimum(np.floor(f2), src - 1).astype(np.int64)
    s1 = np.minimum(np.ceil(f1).astype(np.int64), s2)
    head = (s1 - f1) > 1e-3  # partly covered sample before the whole ones
    tail = (f2 - s2) > 1e-3  # partly covered sample after them
    whole = s2 - s1
    count = head.astype(np.int64) + whole + tail
    e = np.arange(int(count.max()))[None, :]
    pos = e - head[:, None]  # position among the whole samples
    is_head = head[:, None] & (e == 0)
    is_tail = tail[:, None] & (pos == whole[:, None])
    index = np.where(is_head, (s1 - 1)[:, None], s1[:, None] + pos)
    index = np.where(is_tail, s2[:, None], index)
    weight = np.where(is_head, ((s1 - f1) / cell)[:, None], (1.0 / cell)[:, None])
    weight = np.where(is_tail, (np.minimum(np.minimum(f2 - s2, 1.0), cell) / cell)[:, None], weight)
    pad = e >= count[:, None]
    index = np.where(pad, index[:, :1], index)
    return index, np.where(pad, 0.0, weight).astype(np.float32)


def _area_columns(strip: np.ndarray, width: int) -> np.ndarray:
    """``[rows, W, 3]`` uint8 → ``[rows, width, 3]`` float32: INTER_AREA along x only, unrounded.

    The values are the per-row column sums of OpenCV's general area path, which a 2-D
    resize with a non-integer vertical scale uses. Converted to float32 a chunk of rows at
    a time so the float copy stays small.
    """
    rows, src_w = strip.shape[:2]
    out = np.empty((rows, width, 3), dtype=np.float32)
    # An integer horizontal factor with one output row per input row would send
    # cv2.resize down its block-mean path, which sums before scaling: weigh by hand.
    table = _area_table(src_w, width) if _area_fast_scale(src_w, width) is not None else None
    chunk = max(1, _FLOAT_CHUNK_PIXELS // src_w)
    for r0 in range(0, rows, chunk):
        src = strip[r0 : r0 + chunk].astype(np.float32)
        if table is None:
            out[r0 : r0 + chunk] = cv2.resize(src, (width, src.shape[0]), interpolation=cv2.INTER_AREA)
            continue
        index, weight = table
        acc = src[:, index[:, 0]] * weight[:, 0, None]
        for e in range(1, index.shape[1]):
            acc += src[:, index[:, e]] * weight[:, e, None]
        out[r0 : r0 + chunk] = acc
    return out
