"""Runtime builders of small whole-slide fixtures (written to a temporary folder, never committed).

* :func:`make_bcss_slide` — the five overlapping BCSS tiles stitched into one
  1024 × 3072 strip, written as a tiled pyramidal TIFF that OpenSlide's generic-tiff
  driver opens, with its label mask (TIFF) and a QuPath GeoJSON made from the mask.
* :func:`make_coordinate_slide` — a synthetic slide whose pixels encode their own level-0
  coordinates (for alignment tests).
* :func:`make_tiled_slide` — a real slide repeated ``rx × ry`` times into a bigger pyramid,
  written tile by tile (never whole in memory), for benchmarks at 4× / 16× area.

Resolution of the BCSS fixture: BCSS regions were cut at the scanner's base resolution,
about 0.25 µm/px (40×); :func:`make_bcss_slide` writes ``mpp=0.25`` by default (a
parameter) so a read at 0.5 µm/px exercises a 2× downsample.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import tifffile

from pathseg_core.data.mosaic import stitch_tiles
from pathseg_core.data.paths import data_root
from pathseg_core.data.wsi.annotations import write_geojson
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.raster import vectorize
from pathseg_core.data.wsi.reader import SlideReader

#: BCSS tile names end in ``-<x offset>``.
BCSS_OFFSET_PATTERN = r"-(\d+)$"


def _resolution(mpp: float | None) -> dict[str, object]:
    """Keyword arguments of ``tifffile`` writes for ``mpp`` µm/px (pixels per centimetre)."""
    if mpp is None:
        return {}
    return {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}


def write_pyramid_tiff(
    path: str | Path,
    image: np.ndarray,
    *,
    mpp: float | None,
    tile: int = 256,
    levels: int = 3,
    compression: str = "zlib",
) -> Path:
    """Write ``[H, W, 3]`` uint8 RGB as a tiled TIFF pyramid OpenSlide opens (generic-tiff).

    Levels are successive top-level pages at downsample ``1, 2, 4, …`` (``cv2.INTER_AREA``);
    pages after the first are marked reduced-resolution (``NewSubfileType = 1``).
    Resolution tags give ``mpp`` (µm per level-0 pixel) in pixels per centimetre.
    """
    path = Path(path)
    level = image
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2**31) as writer:
        for k in range(levels):
            scaled_mpp = None if mpp is None else mpp * 2**k
            writer.write(
                level,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
                subfiletype=0 if k == 0 else 1,
                metadata=None,
                **_resolution(scaled_mpp),
            )
            if min(level.shape[:2]) < 2:
                break
            level = cv2.resize(level, (level.shape[1] // 2, level.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return path


def make_bcss_slide(
    out_dir: str | Path, *, mpp: float = 0.25, tile: int = 256, levels: int = 3
) -> tuple[Path, Path, Path]:
    """Build the BCSS strip slide, its label mask and its GeoJSON in ``out_dir``.

    Returns:
        ``(slide_path, label_mask_path, geojson_path)``: ``bcss_strip.tif`` (RGB pyramid,
        3072 × 1024 level 0), ``bcss_strip_mask.tif`` (uint8 BCSS codes, level-0 aligned,
        0 = outside ROI) and ``bcss_strip.geojson`` (one Feature per 4-connected region of
        each code except 0, classified with the names of ``class_names.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = data_root() / "seg" / "bcss"
    images = sorted((root / "images").glob("*.png"))
    masks = [root / "masks" / p.name for p in images]
    mosaic = stitch_tiles(images, masks, BCSS_OFFSET_PATTERN, source_id="bcss_strip")
    assert mosaic.mask is not None
    names = {int(k): v for k, v in json.loads((root / "class_names.json").read_text()).items()}
    slide = write_pyramid_tiff(out / "bcss_strip.tif", mosaic.image, mpp=mpp, tile=tile, levels=levels)
    mask_path = out / "bcss_strip_mask.tif"
    tifffile.imwrite(
        mask_path, mosaic.mask.astype(np.uint8), tile=(tile, tile), compression="zlib", photometric="minisblack"
    )
    height, width = mosaic.mask.shape
    annotations = vectorize(mosaic.mask, PatchFrame(0.0, 0.0, 1.0, width, height), names=names, skip=(0,))
    geojson = write_geojson(annotations, out / "bcss_strip.geojson")
    return slide, mask_path, geojson


def coordinate_image(width: int, height: int, x0: int = 0, y0: int = 0) -> np.ndarray:
    """``[height, width, 3]`` uint8 whose pixel at level-0 ``(x, y)`` is ``(x % 256, y % 256, 16·(x // 256) + y // 256)``.

    Unique for ``x, y < 4096``; decode with :func:`decode_coordinates`.
    """
    if x0 + width > 4096 or y0 + height > 4096:
        raise ValueError("coordinate images encode x, y < 4096 only")
    xs = np.arange(x0, x0 + width)[None, :].repeat(height, 0)
    ys = np.arange(y0, y0 + height)[:, None].repeat(width, 1)
    return np.stack([xs % 256, ys % 256, 16 * (xs // 256) + ys // 256], axis=-1).astype(np.uint8)


def decode_coordinates(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` pixels of a :func:`coordinate_image` → ``[..., 2]`` int64 level-0 ``xy``."""
    rgb = rgb.astype(np.int64)
    return np.stack([rgb[..., 0] + 256 * (rgb[..., 2] // 16), rgb[..., 1] + 256 * (rgb[..., 2] % 16)], axis=-1)


def make_coordinate_slide(
    path: str | Path, width: int, height: int, *, mpp: float | None = 0.5, levels: int = 3
) -> Path:
    """A lossless pyramid TIFF whose level-0 pixels encode their coordinates (see :func:`coordinate_image`)."""
    return write_pyramid_tiff(path, coordinate_image(width, height), mpp=mpp, levels=levels)


# ---------------------------------------------------------------------------- repeated slides
def _wrapped_region(
    reader: SlideReader, x: float, y: float, w: int, h: int, ds: float, canvas: tuple[int, int], fill: int
) -> np.ndarray:
    """``[h, w, 3]`` of the repeated canvas (level-0 ``canvas`` size) at downsample ``ds``.

    The canvas is the source slide tiled without gaps; output pixels are split at the
    seams and each piece is read from the source at the same downsample.
    """
    sw, sh = reader.dimensions
    out = np.full((h, w, 3), fill, dtype=np.uint8)

    def pieces(start: float, n: int, period: int, limit: int) -> Iterator[tuple[int, int, float]]:
        """``(first, last)`` output indices of each piece and its start in source pixels."""
        i = 0
        while i < n:
            pos = start + i * ds
            if pos >= limit:
                return
            tile_index = math.floor(pos / period)
            seam = (tile_index + 1) * period
            j = min(n, max(i + 1, math.ceil((min(seam, limit) - start) / ds)))
            yield i, j, pos - tile_index * period
            i = j

    for r0, r1, sy in pieces(y, h, sh, canvas[1]):
        for c0, c1, sx in pieces(x, w, sw, canvas[0]):
            out[r0:r1, c0:c1] = reader.read_scaled(sx, sy, c1 - c0, r1 - r0, ds)
    return out


def make_tiled_slide(
    src: str | Path,
    out: str | Path,
    repeat: tuple[int, int] = (2, 2),
    *,
    tile: int = 256,
    levels: int | None = None,
    compression: str = "jpeg",
) -> Path:
    """Repeat slide ``src`` ``repeat = (rx, ry)`` times into a pyramid TIFF at ``out``, tile by tile.

    Level ``k`` has downsample ``2^k`` (down to one tile by default); each tile is read
    from ``src`` on demand, so memory stays at a few tiles whatever the output size.
    The source mpp (if any) is written as resolution tags.
    """
    reader = SlideReader(src)
    rx, ry = repeat
    if rx < 1 or ry < 1:
        raise ValueError(f"repeat must be >= 1 along both axes, got {repeat}")
    sw, sh = reader.dimensions
    canvas = (sw * rx, sh * ry)
    if levels is None:
        levels = 1 + max(0, math.ceil(math.log2(max(canvas) / tile)))
    out = Path(out)
    with tifffile.TiffWriter(out, bigtiff=canvas[0] * canvas[1] * 3 > 2**31) as writer:
        for k in range(levels):
            ds = float(2**k)
            width, height = math.ceil(canvas[0] / ds), math.ceil(canvas[1] / ds)

            def tiles(ds: float = ds, width: int = width, height: int = height) -> Iterator[np.ndarray]:
                for ty in range(0, height, tile):
                    for tx in range(0, width, tile):
                        yield _wrapped_region(reader, tx * ds, ty * ds, tile, tile, ds, canvas, reader.fill)

            writer.write(
                tiles(),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
                subfiletype=0 if k == 0 else 1,
                metadata=None,
                **_resolution(None if reader.mpp is None else reader.mpp * ds),
            )
    reader.close()
    return out


def make_bcss_split_slides(
    out_dir: str | Path, *, split_x: int = 2048, mpp: float = 0.25, tile: int = 256, levels: int = 3
) -> dict[str, tuple[Path, Path]]:
    """The BCSS strip cut at column ``split_x`` into two spatially disjoint slides (train / held-out).

    The five BCSS tiles overlap, so a slide-level split of the whole strip cannot hold out
    any pixels; cutting the stitched strip can. Each part is a pyramidal TIFF with its
    level-0 aligned label mask (uint8 BCSS codes, 0 = outside ROI).

    Returns:
        ``{"train": (slide, mask), "test": (slide, mask)}``: ``bcss_left.tif`` (columns
        ``[0, split_x)``) and ``bcss_right.tif`` (columns ``[split_x, 3072)``) with their
        ``*_mask.tif``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = data_root() / "seg" / "bcss"
    images = sorted((root / "images").glob("*.png"))
    mosaic = stitch_tiles(images, [root / "masks" / p.name for p in images], BCSS_OFFSET_PATTERN, source_id="bcss")
    assert mosaic.mask is not None
    if not 0 < split_x < mosaic.image.shape[1]:
        raise ValueError(f"split_x {split_x} must be inside the strip's width {mosaic.image.shape[1]}")
    parts = {"train": ("bcss_left", slice(0, split_x)), "test": ("bcss_right", slice(split_x, None))}
    result = {}
    for split, (stem, cols) in parts.items():
        slide = write_pyramid_tiff(
            out / f"{stem}.tif", np.ascontiguousarray(mosaic.image[:, cols]), mpp=mpp, tile=tile, levels=levels
        )
        mask = out / f"{stem}_mask.tif"
        tifffile.imwrite(mask, np.ascontiguousarray(mosaic.mask[:, cols]).astype(np.uint8), tile=(tile, tile),
                         compression="zlib", photometric="minisblack")
        result[split] = (slide, mask)
    return result
