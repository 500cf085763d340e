"""Tissue detection on a low-resolution view of a slide, cached per slide.

Method: read the slide at about ``8 µm/px`` (or a fixed downsample when it has no mpp),
threshold the HSV saturation with Otsu (floored at ``min_saturation`` so a blank slide
stays blank), close then open with elliptic kernels, drop regions smaller than
``min_area_um2`` and fill holes. Stained tissue is saturated; glass, white padding and
black borders (``S = 0`` when ``V = 0``) are not.

The mask is cached under ``cache_dir`` (default ``$PATHSEG_CACHE/tissue`` or
``~/.cache/pathseg/tissue``) keyed by slide path, size, mtime, the mpp used and every
parameter, next to a PNG preview (thumbnail with the mask overlaid).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from pathseg_core.data.wsi.reader import SlideReader

#: Bump when the algorithm changes so stale cache entries are not reused.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class TissueParams:
    """Parameters of :func:`detect_tissue` (all part of the cache key).

    Attributes:
        mpp: resolution of the mask in µm/px when the slide has an mpp.
        downsample: level-0 pixels per mask pixel when the slide has no mpp.
        min_saturation: floor for the Otsu threshold on saturation (0..255).
        closing_radius: radius in mask pixels of the closing (bridges small gaps); 0 = off.
        opening_radius: radius in mask pixels of the opening (removes specks); 0 = off.
        min_area_um2: smallest kept region in µm² (used when the slide has an mpp).
        min_area_px: smallest kept region in mask pixels (used when it has not).
        fill_holes: fill holes enclosed by tissue.
    """

    mpp: float | None = 8.0
    downsample: float = 16.0
    min_saturation: int = 20
    closing_radius: int = 2
    opening_radius: int = 1
    min_area_um2: float = 20_000.0
    min_area_px: int = 16
    fill_holes: bool = True


@dataclass
class TissueMask:
    """A boolean tissue mask over a whole slide.

    Attributes:
        mask: ``[h, w]`` bool, rows then columns; mask pixel ``(r, c)`` covers level-0
            ``[c·scale_x, (c+1)·scale_x) × [r·scale_y, (r+1)·scale_y)``.
        slide_size: level-0 ``(width, height)`` of the slide.
        downsample: nominal level-0 pixels per mask pixel.
        mpp: µm per mask pixel, or ``None`` for slides without mpp.
        threshold: saturation threshold that was applied.
        from_cache: whether this mask was loaded from the cache.
        preview_path: the PNG preview, when cached.
    """

    mask: np.ndarray
    slide_size: tuple[int, int]
    downsample: float
    mpp: float | None
    threshold: float
    from_cache: bool = False
    preview_path: Path | None = None
    _integral: np.ndarray | None = field(default=None, repr=False)

    @property
    def scale(self) -> tuple[float, float]:
        """Exact level-0 pixels per mask pixel along ``(x, y)``."""
        h, w = self.mask.shape
        return self.slide_size[0] / w, self.slide_size[1] / h

    @property
    def area_fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction(self, x0: float, y0: float, w0: float, h0: float) -> float:
        """Tissue fraction of a level-0 box (``x0, y0`` top-left; ``w0, h0`` size), at mask-pixel grain.

        Parts of the box outside the slide count as background.
        """
        if self._integral is None:
            self._integral = np.pad(self.mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        sx, sy = self.scale
        ca, ra = round(x0 / sx), round(y0 / sy)
        cb, rb = max(ca + 1, round((x0 + w0) / sx)), max(ra + 1, round((y0 + h0) / sy))
        total = (cb - ca) * (rb - ra)
        h, w = self.mask.shape
        ca, cb, ra, rb = min(max(ca, 0), w), min(max(cb, 0), w), min(max(ra, 0), h), min(max(rb, 0), h)
        ii = self._integral
        inside = ii[rb, cb] - ii[ra, cb] - ii[rb, ca] + ii[ra, ca]
        return float(inside) / total

    def tissue_points(self) -> np.ndarray:
        """``[K, 2]`` float level-0 ``xy`` centres of the tissue mask pixels."""
        rows, cols = np.nonzero(self.mask)
        sx, sy = self.scale
        return np.stack([(cols + 0.5) * sx, (rows + 0.5) * sy], axis=1)


def default_cache_dir() -> Path:
    """``$PATHSEG_CACHE/tissue`` if the variable is set, else ``~/.cache/pathseg/tissue``."""
    root = os.environ.get("PATHSEG_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "pathseg") / "tissue"


def segment_tissue(rgb: np.ndarray, params: TissueParams, mask_mpp: float | None) -> tuple[np.ndarray, float]:
    """Tissue mask of a low-resolution ``[h, w, 3]`` uint8 RGB image.

    Args:
        rgb: the slide (or a region) at mask resolution.
        params: thresholds and morphology.
        mask_mpp: µm per pixel of ``rgb`` (converts ``min_area_um2``), or ``None``.

    Returns:
        ``([h, w] bool mask, threshold used)``.
    """
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = max(float(otsu), float(params.min_saturation))
    mask = (saturation > threshold).astype(np.uint8)
    if params.closing_radius > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(params.closing_radius))
    if params.opening_radius > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(params.opening_radius))
    min_area = params.min_area_um2 / mask_mpp**2 if mask_mpp else float(params.min_area_px)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    out = keep[labels]
    if params.fill_holes:
        out = ndimage.binary_fill_holes(out)
    return out, threshold


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def detect_tissue(
    reader: SlideReader,
    params: TissueParams | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> TissueMask:
    """Tissue mask of a whole slide, from the cache when a matching entry exists.

    Args:
        reader: the slide.
        params: detection parameters (default :class:`TissueParams`).
        cache_dir: where masks and previews are kept (default :func:`default_cache_dir`).
        use_cache: read and write the cache.
    """
    params = params or TissueParams()
    slide_mpp = reader.mpp
    if params.mpp is not None and slide_mpp is not None:
        downsample = max(1.0, params.mpp / slide_mpp)
    else:
        downsample = max(1.0, params.downsample)
    mask_mpp = slide_mpp * downsample if slide_mpp is not None else None
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(reader, params, downsample)
    if use_cache:
        cached = _load(folder, key, reader)
        if cached is not None:
            return cached
    thumb = reader.read_thumbnail(downsample)
    mask, threshold = segment_tissue(thumb, params, mask_mpp)
    result = TissueMask(mask, reader.dimensions, downsample, mask_mpp, threshold)
    if use_cache:
        result.preview_path = _store(folder, key, result, thumb, reader)
    return result


def render_preview(
    thumb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 200, 0), alpha: float = 0.35
) -> np.ndarray:
    """``[h, w, 3]`` uint8 RGB: ``thumb`` tinted with ``color`` where ``mask`` is set, outlined."""
    out = thumb.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = out[mask] * (1.0 - alpha) + tint * alpha
    out = np.clip(out, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def _cache_key(reader: SlideReader, params: TissueParams, downsample: float) -> str:
    stat = reader.path.stat()
    payload = {
        "path": str(reader.path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "downsample": round(downsample, 9),
        "mpp": reader.mpp,
        "params": asdict(params),
        "version": _CACHE_VERSION,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _load(folder: Path, key: str, reader: SlideReader) -> TissueMask | None:
    meta_path, mask_path = folder / f"{key}.json", folder / f"{key}.png"
    if not (meta_path.is_file() and mask_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    except (OSError, json.JSONDecodeError):
        return None
    expected = (
        math.ceil(reader.dimensions[1] / meta["downsample"]),
        math.ceil(reader.dimensions[0] / meta["downsample"]),
    )
    if mask is None or mask.shape != expected:
        return None  # unreadable or foreign entry: recompute
    preview = folder / f"{key}_preview.png"
    return TissueMask(
        mask > 0,
        reader.dimensions,
        float(meta["downsample"]),
        meta["mpp"],
        float(meta["threshold"]),
        from_cache=True,
        preview_path=preview if preview.is_file() else None,
    )


def _store(folder: Path, key: str, result: TissueMask, thumb: np.ndarray, reader: SlideReader) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    preview = folder / f"{key}_preview.png"
    meta = {
        "slide": str(reader.path),
        "downsample": result.downsample,
        "mpp": result.mpp,
        "threshold": result.threshold,
    }
    # Write to temporary names then rename: concurrent workers never see half-written files.
    _write_atomic(
        preview, lambda p: cv2.imwrite(str(p), cv2.cvtColor(render_preview(thumb, result.mask), cv2.COLOR_RGB2BGR))
    )
    _write_atomic(folder / f"{key}.png", lambda p: cv2.imwrite(str(p), result.mask.astype(np.uint8) * 255))
    _write_atomic(folder / f"{key}.json", lambda p: p.write_text(json.dumps(meta)))
    return preview


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
