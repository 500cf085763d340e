"""``SlideReader``: regions of a whole-slide image at a physical resolution.

Coordinates: ``x, y`` are ALWAYS level-0 pixels (column, row) of the top-left corner;
``w, h`` are output pixels at the requested resolution. The reader picks the coarsest
pyramid level that is still at least as fine as the request (within ``tolerance``),
reads it, and resamples the rest with ``cv2.INTER_AREA``. Parts of a region outside the
slide are filled with ``fill`` (white by default) before resampling, so borders blend
exactly as the slide edge would.

The file is opened lazily on first use and once per process: pickling drops the handle
(DataLoader workers re-open), and a forked child that inherits a handle re-opens too,
because file offsets shared across ``fork`` race.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pathseg_core.data.wsi.backends import Backend, open_backend
from pathseg_core.data.wsi.errors import MppMissingError, ResolutionError, SlideNotFoundError
from pathseg_core.data.wsi.frames import PatchFrame

BackendName = Literal["auto", "openslide", "tifffile"]


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
        """``[h, w, 3]`` uint8 RGB of the region whose level-0 footprint is ``w·downsample × h·downsample``."""
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
        region = self._read_level(level, lx, ly, lw, lh)
        return cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)

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
