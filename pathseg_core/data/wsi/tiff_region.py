"""Read a rectangle of one TIFF page by decoding only the tiles (or strips) it touches.

tifffile decodes whole pages; a gigapixel level does not fit in memory, so this module
reads the byte ranges of the needed segments through the page's file handle and decodes
them one by one with the page's own codec (``TiffPage.decode``).

Also: physical resolution from TIFF resolution tags or OME-XML (:func:`page_mpp`).
"""

from __future__ import annotations

import math
import re
import threading

import numpy as np
import tifffile

from pathseg_core.data.wsi.errors import SlideFormatError

#: Microns per ResolutionUnit (TIFF tag 296): 2 = inch, 3 = centimetre; 1 = no unit.
_UNIT_MICRONS = {2: 25_400.0, 3: 10_000.0}

#: Microns per OME ``PhysicalSizeXUnit`` value.
_OME_UNIT_MICRONS = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def read_page_region(
    page: tifffile.TiffPage,
    x: int,
    y: int,
    w: int,
    h: int,
    *,
    lock: threading.Lock,
    fill: int = 0,
) -> np.ndarray:
    """Decode the box ``[y, y + h) x [x, x + w)`` (rows, columns) of ``page``.

    Args:
        page: a tiled or stripped page with chunky (interleaved) samples.
        x: left edge in the page's pixels; the box must lie inside the page.
        y: top edge in the page's pixels.
        w: box width in pixels (> 0).
        h: box height in pixels (> 0).
        lock: serialises seek + read on the shared file handle.
        fill: value for sparse segments (byte count 0) that hold no data.

    Returns:
        ``[h, w, S]`` array of the page's dtype, ``S`` samples per pixel.

    Raises:
        SlideFormatError: planar-separate layout, or a segment that cannot be read / decoded.
    """
    width, height, samples = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
        raise ValueError(f"box x={x} y={y} w={w} h={h} is not inside the {width}x{height} page")
    if samples > 1 and int(page.planarconfig) != 1:
        raise SlideFormatError(
            f"{page.parent.filehandle.path}: planar-separate TIFF pages are not supported; convert to chunky"
        )
    if page.is_tiled:
        seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
    else:
        seg_h, seg_w = min(int(page.rowsperstrip or height), height), width
    n_cols = math.ceil(width / seg_w)
    out = np.empty((h, w, samples), dtype=page.dtype)
    fh = page.parent.filehandle
    tables = {"jpegtables": page.jpegtables, "jpegheader": getattr(page, "jpegheader", None)}
    for row in range(y // seg_h, (y + h - 1) // seg_h + 1):
        for col in range(x // seg_w, (x + w - 1) // seg_w + 1):
            index = row * n_cols + col
            r0, c0 = row * seg_h, col * seg_w
            # Intersection of the segment with the requested box, in page pixels.
            ya, yb = max(y, r0), min(y + h, r0 + seg_h, height)
            xa, xb = max(x, c0), min(x + w, c0 + seg_w, width)
            count = int(page.databytecounts[index])
            if count == 0:
                out[ya - y : yb - y, xa - x : xb - x] = fill
                continue
            try:
                with lock:
                    fh.seek(int(page.dataoffsets[index]))
                    data = fh.read(count)
                if len(data) != count:
                    raise OSError(f"read {len(data)} of {count} bytes")
                segment = page.decode(data, index, **tables)[0]
            except Exception as err:  # noqa: BLE001 - codecs raise many types; report them as one
                raise SlideFormatError(
                    f"{fh.path}: segment {index} at ({c0}, {r0}) cannot be decoded ({type(err).__name__}: {err}); "
                    "the file may be truncated or corrupt"
                ) from None
            if segment is None:
                raise SlideFormatError(f"{fh.path}: segment {index} decoded to nothing; the file may be truncated")
            segment = np.asarray(segment).reshape(-1, segment.shape[-2], samples)
            out[ya - y : yb - y, xa - x : xb - x] = segment[ya - r0 : yb - r0, xa - c0 : xb - c0]
    return out


def page_mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    """Microns per pixel of ``page`` from OME-XML or Aperio SVS, else the TIFF resolution tags, else ``None``.

    Resolution tags count only when ``XResolution`` is present, positive and the unit is
    inch or centimetre (unit "none" carries no physical size). ``X`` and ``Y`` are
    averaged: pathseg assumes square pixels.
    """
    described = _ome_mpp(tif) if tif.is_ome else _svs_mpp(tif)
    if described is not None:
        return described
    tags = page.tags
    if "XResolution" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    if unit not in _UNIT_MICRONS:
        return None
    values = []
    for name in ("XResolution", "YResolution"):
        if name in tags:
            num, den = tags[name].value
            if num > 0 and den > 0:
                values.append(_UNIT_MICRONS[unit] * den / num)
    if not values:
        return None
    mpp = float(np.mean(values))
    # 1 pixel per inch (25 400 µm/px) and similar are writer defaults, not a scan resolution.
    return mpp if mpp < 1_000.0 else None


def _svs_mpp(tif: tifffile.TiffFile) -> float | None:
    """``MPP`` from an Aperio ImageDescription (``… |MPP = 0.4990|…``)."""
    if not tif.is_svs:
        return None
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", tif.pages[0].description)
    try:
        mpp = float(match.group(1)) if match else 0.0
    except ValueError:
        return None
    return mpp if mpp > 0 else None


def _ome_mpp(tif: tifffile.TiffFile) -> float | None:
    """``PhysicalSizeX`` of the first OME ``Pixels`` element, in microns."""
    if not tif.is_ome or not tif.ome_metadata:
        return None
    match = re.search(r"<Pixels\b[^>]*>", tif.ome_metadata)
    if match is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(0)))
    if "PhysicalSizeX" not in attrs:
        return None
    scale = _OME_UNIT_MICRONS.get(attrs.get("PhysicalSizeXUnit", "µm"))
    try:
        size = float(attrs["PhysicalSizeX"])
    except ValueError:
        return None
    return size * scale if scale and size > 0 else None
