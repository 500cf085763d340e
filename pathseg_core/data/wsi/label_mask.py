"""Label-mask images (PNG) and TIFFs aligned to a slide, read per patch with nearest-neighbour sampling.

A mask is aligned to level 0 of its slide, possibly downsampled: mask pixel ``(c, r)``
covers level-0 ``[c·d, (c+1)·d) × [r·d, (r+1)·d)`` with ``d = downsample``. Output pixel
``(c, r)`` of a patch takes the mask value under its centre. Tiled / stripped TIFF masks
are read region by region; other formats are loaded whole on first use (per process).
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import tifffile

from pathseg_core.data.class_map import ClassMap
from pathseg_core.data.wsi.errors import AnnotationError, AnnotationNotFoundError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.tiff_region import read_page_region

_TIFF_SUFFIXES = (".tif", ".tiff")


class LabelMaskReader:
    """Read label codes (or class ids) of a patch from a mask aligned to a slide.

    Args:
        path: single-channel integer mask (PNG, TIFF …).
        downsample: level-0 slide pixels per mask pixel.
        class_map: maps stored codes to class ids (``None``: return codes as stored).
        outside: value for pixels outside the mask (default: the class map's
            ``ignore_index``, else 0).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        downsample: float = 1.0,
        class_map: ClassMap | None = None,
        outside: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AnnotationNotFoundError(f"label mask {self.path} does not exist; check the path")
        if not downsample > 0:
            raise ValueError(f"mask downsample must be > 0, got {downsample}")
        self.downsample = float(downsample)
        self.class_map = class_map
        self.outside = outside if outside is not None else (class_map.ignore_index if class_map else 0)
        self._array: np.ndarray | None = None
        self._tiff: tifffile.TiffFile | None = None
        self._page: tifffile.TiffPage | None = None
        self._lock = threading.Lock()
        self._shape: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.update(_array=None, _tiff=None, _page=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _open(self) -> None:
        if self._array is not None or self._page is not None:
            return
        if self.path.suffix.lower() in _TIFF_SUFFIXES:
            try:
                self._tiff = tifffile.TiffFile(str(self.path))
                page = self._tiff.series[0].levels[0].keyframe
            except Exception as err:  # noqa: BLE001 - tifffile raises many types on odd files
                raise AnnotationError(f"label mask {self.path} cannot be read as TIFF ({err})") from None
            if int(page.samplesperpixel) != 1 or not np.issubdtype(page.dtype, np.integer):
                raise AnnotationError(
                    f"label mask {self.path} has {page.samplesperpixel} samples of {page.dtype}; expected one integer channel"
                )
            self._page = page
            self._shape = (int(page.imagelength), int(page.imagewidth))
            return
        array = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise AnnotationError(f"label mask {self.path} is not an image OpenCV can read; use PNG or TIFF")
        if array.ndim != 2:
            raise AnnotationError(
                f"label mask {self.path} has {array.shape[-1]} channels; expected one channel of codes"
            )
        self._array = array
        self._shape = array.shape[:2]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the mask."""
        self._open()
        assert self._shape is not None
        return self._shape

    def check_alignment(self, slide_size: tuple[int, int]) -> None:
        """Raise :class:`AnnotationError` unless the mask covers the ``(width, height)`` slide at its downsample."""
        rows, cols = self.shape
        width, height = slide_size
        cover_w, cover_h = cols * self.downsample, rows * self.downsample
        if abs(cover_w - width) > self.downsample + 1 or abs(cover_h - height) > self.downsample + 1:
            guess = width / cols
            raise AnnotationError(
                f"label mask {self.path} is {cols}x{rows}: at downsample {self.downsample:g} it covers "
                f"{cover_w:.0f}x{cover_h:.0f} but the slide is {width}x{height}; pass downsample≈{guess:.3g} or the right mask"
            )

    def _read_box(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """In-bounds box of the stored mask, ``[h, w]``."""
        if self._array is not None:
            return self._array[y : y + h, x : x + w]
        assert self._page is not None
        return read_page_region(self._page, x, y, w, h, lock=self._lock)[..., 0]

    def read(self, frame: PatchFrame) -> np.ndarray:
        """``[frame.height, frame.width]`` int64 codes (or class ids with a class map) under the patch.

        Raises:
            ClassMapError: the patch holds codes the class map does not cover.
        """
        self._open()
        rows, cols = self.shape
        # Mask column / row under each output pixel centre.
        mc = np.floor((frame.x0 + (np.arange(frame.width) + 0.5) * frame.downsample) / self.downsample).astype(np.int64)
        mr = np.floor((frame.y0 + (np.arange(frame.height) + 0.5) * frame.downsample) / self.downsample).astype(
            np.int64
        )
        valid_c, valid_r = (mc >= 0) & (mc < cols), (mr >= 0) & (mr < rows)
        out = np.full((frame.height, frame.width), self.outside, dtype=np.int64)
        if not valid_c.any() or not valid_r.any():
            return out
        ca, cb = int(mc[valid_c].min()), int(mc[valid_c].max()) + 1
        ra, rb = int(mr[valid_r].min()), int(mr[valid_r].max()) + 1
        box = self._read_box(ca, ra, cb - ca, rb - ra)
        codes = box[np.ix_(mr[valid_r] - ra, mc[valid_c] - ca)]
        if self.class_map is not None:
            codes = self.class_map.apply(codes, name=str(self.path))
        out[np.ix_(valid_r, valid_c)] = codes
        return out
