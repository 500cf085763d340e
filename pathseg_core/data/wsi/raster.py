"""Polygons ↔ label rasters in a patch's frame.

* :func:`rasterize` paints area annotations into a ``[h, w]`` label patch at the patch's
  own resolution: a pixel takes a polygon's value when its centre lies inside it (holes
  excluded; see :func:`fill_rings` for centres on an edge); later annotations paint over
  earlier ones.
* :func:`vectorize` is the inverse for label masks: per class, per 4-connected
  component, marching squares at level 0.5 gives the outer ring and the holes, turned into
  the pixel-edge rings they approximate, so ``rasterize(vectorize(mask)) == mask`` exactly.
  Temporaries stay small: one bool mask and one int32 label image of the patch per class,
  and a bool / float64 crop of each component's bounding box.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from skimage import measure

from pathseg_core.data.wsi.annotations import Annotation
from pathseg_core.data.wsi.frames import PatchFrame


def _polygons(annotation: Annotation) -> list[Polygon]:
    geom = annotation.geometry
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return list(geom.geoms)
    return []


def fill_rings(rings: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` bool: pixels whose centres lie inside ``rings`` under the even-odd rule.

    Centres exactly on an edge count as inside on left / top edges and outside on right /
    bottom ones, as nearest-neighbour sampling of a label mask does.

    Args:
        rings: closed rings as ``[K, 2]`` patch ``xy`` (an exterior and its holes: even-odd
            makes holes empty).
        shape: ``(h, w)`` of the output; pixel ``(r, c)`` has its centre at ``(c + 0.5, r + 0.5)``.

    A vectorised scanline fill: every edge yields its crossings with the pixel-centre rows
    (half-open in ``y``, so a vertex is counted once), crossings are sorted per row and
    paired, and each span fills the pixel centres strictly between its two crossings.
    Cost is linear in crossings and pixels, not pixels × vertices.
    """
    h, w = shape
    inside = np.zeros((h, w), dtype=bool)
    edges = [np.concatenate([ring, np.roll(ring, -1, axis=0)], axis=1) for ring in rings if len(ring) >= 3]
    if not edges:
        return inside
    x1, y1, x2, y2 = np.concatenate(edges).T
    lo, hi = np.minimum(y1, y2), np.maximum(y1, y2)
    # Rows r whose centre r + 0.5 lies in [lo, hi): r in [ceil(lo - 0.5), ceil(hi - 0.5)).
    r_start = np.clip(np.ceil(lo - 0.5), 0, h).astype(np.int64)
    r_stop = np.clip(np.ceil(hi - 0.5), 0, h).astype(np.int64)
    counts = np.maximum(r_stop - r_start, 0)
    if counts.sum() == 0:
        return inside
    edge = np.repeat(np.arange(len(x1)), counts)
    rows = np.repeat(r_start, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    yc = rows + 0.5
    t = (yc - y1[edge]) / (y2[edge] - y1[edge])
    xs = x1[edge] + t * (x2[edge] - x1[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # Rows of pixels above / below the patch were clipped away whole, so every row keeps an even count.
    starts, stops, span_rows = xs[0::2], xs[1::2], rows[0::2]
    # Columns c with starts <= c + 0.5 < stops (half-open like the rows, so a centre on a
    # shared edge belongs to exactly one of the two polygons: the one right of / below it).
    c_start = np.clip(np.ceil(starts - 0.5).astype(np.int64), 0, w)
    c_stop = np.clip(np.ceil(stops - 0.5).astype(np.int64), 0, w)
    keep = c_stop > c_start
    diff = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(diff, (span_rows[keep], c_start[keep]), 1)
    np.add.at(diff, (span_rows[keep], c_stop[keep]), -1)
    return np.cumsum(diff[:, :w], axis=1) > 0


def rasterize(
    annotations: Iterable[Annotation],
    frame: PatchFrame,
    *,
    fill: int = 0,
    values: Sequence[int] | None = None,
    dtype: type = np.int64,
) -> np.ndarray:
    """Paint area annotations into a ``[frame.height, frame.width]`` label patch.

    Args:
        annotations: annotations in level-0 coordinates (points are ignored).
        frame: the patch (level-0 corner and downsample).
        fill: value of pixels no polygon covers.
        values: one value per annotation; default each annotation's ``class_id``
            (annotations without one are skipped).
        dtype: output dtype.
    """
    annotations = list(annotations)
    if values is not None and len(values) != len(annotations):
        raise ValueError(f"got {len(values)} values for {len(annotations)} annotations")
    out = np.full((frame.height, frame.width), fill, dtype=dtype)
    for i, annotation in enumerate(annotations):
        value = annotation.class_id if values is None else values[i]
        if value is None:
            continue
        for polygon in _polygons(annotation):
            exterior = frame.from_level0(np.asarray(polygon.exterior.coords))
            lo, hi = np.floor(exterior.min(0)).astype(int), np.ceil(exterior.max(0)).astype(int)
            x0, y0 = max(lo[0], 0), max(lo[1], 0)
            x1, y1 = min(hi[0], frame.width), min(hi[1], frame.height)
            if x1 <= x0 or y1 <= y0:
                continue
            # Work in the polygon's bounding box only: big patches, small polygons.
            shift = np.array([x0, y0])
            rings = [exterior - shift] + [frame.from_level0(np.asarray(r.coords)) - shift for r in polygon.interiors]
            out[y0:y1, x0:x1][fill_rings(rings, (y1 - y0, x1 - x0))] = value
    return out


def vectorize(
    labels: np.ndarray,
    frame: PatchFrame,
    *,
    names: Mapping[int, str] | None = None,
    skip: Iterable[int] = (0,),
    object_type: str = "annotation",
    min_area_px: int = 1,
    simplify_px: float = 0.0,
) -> list[Annotation]:
    """Polygons (level-0 coordinates) of every labelled region of a ``[h, w]`` integer label patch.

    Args:
        labels: label patch; each value other than ``skip`` becomes one class.
        frame: where ``labels`` sits on the slide (``PatchFrame(0, 0, 1, w, h)`` for a
            level-0 mask of the whole slide).
        names: label value → class name (default ``str(value)``); ``class_id`` is the value.
        skip: values not vectorised (background, "outside ROI").
        object_type: QuPath ``objectType`` of the features.
        min_area_px: components smaller than this many pixels are dropped.
        simplify_px: Douglas-Peucker tolerance in patch pixels (0 keeps the exact rings).

    Returns:
        One annotation per 4-connected component, with its holes.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {list(labels.shape)}")
    skip = set(int(v) for v in skip)
    annotations = []
    for value in _values(labels):
        if value in skip:
            continue
        # int32 labels with bounding boxes and areas in one pass (skimage's label +
        # regionprops would make an int64 image); components are numbered in raster order
        # of their first pixel, like skimage's.
        _, components, stats, _ = cv2.connectedComponentsWithStats(
            (labels == value).view(np.uint8), connectivity=4, ltype=cv2.CV_32S
        )
        for label, (x, y, w, h, area) in enumerate(stats.tolist()[1:], start=1):
            if area < min_area_px:
                continue
            polygon = _component_polygon(components[y : y + h, x : x + w] == label, x, y, frame, simplify_px)
            name = names.get(value, str(value)) if names is not None else str(value)
            annotations.append(Annotation(polygon, name, value, object_type, len(annotations)))
    return annotations


def _values(labels: np.ndarray) -> list[int]:
    """The distinct values of ``labels``, ascending (a histogram for small unsigned types: no sort)."""
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(labels.ravel())).tolist()
    return [int(v) for v in np.unique(labels)]


def staircase(ring: np.ndarray) -> np.ndarray:
    """Turn a marching-squares ring (patch ``xy``) into the pixel-edge ring it approximates.

    At level 0.5 on a binary image, marching squares puts vertices on pixel edges: on a
    vertical edge (``x`` whole, ``y`` half) or a horizontal one (``x`` half, ``y`` whole),
    and cuts each corner with a diagonal. The exact pixel boundary goes through the pixel
    corner instead: ``x`` of the vertical-edge vertex, ``y`` of the horizontal-edge one.
    Collinear vertices are dropped.
    """
    ring = np.asarray(ring, dtype=np.float64)
    if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
        ring = ring[:-1]  # drop the closing duplicate; rings are closed implicitly
    nxt = np.roll(ring, -1, axis=0)
    diagonal = (np.abs(ring[:, 0] - nxt[:, 0]) > 1e-9) & (np.abs(ring[:, 1] - nxt[:, 1]) > 1e-9)
    on_vertical = np.abs(ring[:, 0] - np.round(ring[:, 0])) < 1e-6
    corner = np.where(on_vertical[:, None], np.stack([ring[:, 0], nxt[:, 1]], 1), np.stack([nxt[:, 0], ring[:, 1]], 1))
    out = np.empty((2 * len(ring), 2))
    out[0::2], out[1::2] = ring, corner
    out = out[np.stack([np.ones_like(diagonal), diagonal], axis=1).ravel()]  # corners only after diagonals
    # Keep only direction changes.
    prev, nxt = np.roll(out, 1, axis=0), np.roll(out, -1, axis=0)
    cross = (out[:, 0] - prev[:, 0]) * (nxt[:, 1] - out[:, 1]) - (out[:, 1] - prev[:, 1]) * (nxt[:, 0] - out[:, 0])
    return out[np.abs(cross) > 1e-9]


def _component_polygon(crop: np.ndarray, c0: int, r0: int, frame: PatchFrame, simplify_px: float) -> Polygon:
    """Outer ring and holes of one component along pixel edges, as a level-0 polygon.

    ``crop`` is the component's bool mask over its bounding box, whose top-left pixel is
    patch ``(c0, r0)``.
    """
    # find_contours works on a float64 copy: the padded bool crop is its only other temporary.
    # Low values 8-connected, high values 4-connected: matches 4-connected components.
    contours = measure.find_contours(np.pad(crop, 1), 0.5, fully_connected="low")
    # (row, col) in the padded crop → patch xy with pixel centres at +0.5.
    rings = [staircase(np.stack([c[:, 1] - 1 + c0 + 0.5, c[:, 0] - 1 + r0 + 0.5], axis=1)) for c in contours]
    rings.sort(key=lambda ring: -abs(shapely.area(Polygon(ring))))
    level0 = [frame.to_level0(ring) for ring in rings]
    polygon = Polygon(level0[0], level0[1:])
    if simplify_px > 0:
        polygon = polygon.simplify(simplify_px * frame.downsample, preserve_topology=True)
    return polygon
