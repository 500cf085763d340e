"""Class-id mask → QuPath GeoJSON, vectorised band by band and merged across band borders.

Each band of finished rows is traced with ``cv2.findContours`` (outer rings and holes,
vertices at pixel centres) together with the last row of the band above, so a region
crossing the border yields two polygons that share an edge along that row;
``shapely.unary_union`` merges them. Only polygons touching the current bottom row stay
*open* (they may still grow); the rest are *closed* and never touched again, so memory
holds the vectors, never the raster.

Coordinates: polygons are built in output-pixel indices ``(x = col, y = row)`` and
written in level-0 slide pixels, ``((col + 0.5) * ds, (row + 0.5) * ds)`` where ``ds`` is
the output pixel size in level-0 pixels. Features are sorted and coordinates rounded, so
the same mask always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry


def _polygonal_parts(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside any geometry (collections and multi-parts flattened)."""
    if geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom] if geom.area > 0 else []
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygonal_parts(g)]
    return []


def mask_polygons(mask: np.ndarray, y_offset: int = 0) -> list[Polygon]:
    """Valid polygons of the non-zero pixels of ``[h, w]`` ``mask``, in pixel indices.

    Vertices sit at pixel centres ``(col, row + y_offset)``; regions thinner than two
    pixels have no area and are dropped, holes are kept.
    """
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8, copy=False), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    rings = [c.reshape(-1, 2).astype(np.float64) + (0.0, float(y_offset)) for c in contours]
    holes: dict[int, list[np.ndarray]] = {}
    for i, (_, _, _, parent) in enumerate(hierarchy):
        if parent >= 0 and len(rings[i]) >= 3:
            holes.setdefault(int(parent), []).append(rings[i])
    out: list[Polygon] = []
    for i, (_, _, _, parent) in enumerate(hierarchy):
        if parent >= 0 or len(rings[i]) < 3:
            continue
        poly = Polygon(rings[i], holes.get(i, []))
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        out.extend(_polygonal_parts(poly))
    return out


class BandVectorizer:
    """Accumulate polygons per class from consecutive row bands of a class-id mask.

    Args:
        num_classes: class ids ``1 .. num_classes - 1`` are traced (0 is background).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.closed: dict[int, list[Polygon]] = {c: [] for c in range(1, self.num_classes)}
        self.open: dict[int, list[Polygon]] = {c: [] for c in range(1, self.num_classes)}
        self.next_row = 0
        self.last_row: np.ndarray | None = None

    def add_band(self, ids: np.ndarray) -> None:
        """Trace ``[h, W]`` uint8 class ids of the next rows (directly below the previous band)."""
        h = ids.shape[0]
        if h == 0:
            return
        y0 = self.next_row
        if self.last_row is not None:
            mask_rows, offset, seam = np.concatenate([self.last_row, ids]), y0 - 1, y0 - 1
        else:
            mask_rows, offset, seam = ids, y0, None
        bottom = y0 + h - 1
        present = set(np.unique(mask_rows).tolist()) - {0}
        for c in range(1, self.num_classes):
            new = mask_polygons(mask_rows == c, offset) if c in present else []
            touching = [p for p in new if seam is not None and p.bounds[1] <= seam]
            others = [p for p in new if not (seam is not None and p.bounds[1] <= seam)]
            parts = _polygonal_parts(shapely.unary_union(self.open[c] + touching)) if touching else self.open[c]
            self.open[c] = []
            for p in parts + others:
                (self.open[c] if p.bounds[3] >= bottom else self.closed[c]).append(p)
        self.next_row = y0 + h
        self.last_row = ids[-1:].copy()

    def polygons(self) -> dict[int, list[Polygon]]:
        """All polygons so far per class (closed and open), in output-pixel indices."""
        return {c: self.closed[c] + self.open[c] for c in self.closed}


def _ring(coords: np.ndarray, ds: float, ndigits: int) -> list[list[float]]:
    xy = np.round((np.asarray(coords)[:, :2] + 0.5) * ds, ndigits)
    return xy.tolist()


def _geometry(poly: Polygon, ds: float, ndigits: int) -> dict:
    rings = [_ring(poly.exterior.coords, ds, ndigits)] + [_ring(r.coords, ds, ndigits) for r in poly.interiors]
    return {"type": "Polygon", "coordinates": rings}


def feature_collection(
    polygons: dict[int, list[Polygon]],
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    ds: float,
    ndigits: int = 2,
) -> dict:
    """QuPath GeoJSON FeatureCollection: one annotation per connected polygon, sorted.

    Args:
        polygons: class id → polygons in output-pixel indices.
        class_names: names indexed by class id.
        colors: ``[r, g, b]`` per class id.
        ds: output pixel size in level-0 pixels (coordinates are scaled by it).
        ndigits: decimals kept in coordinates.
    """
    feats: list[tuple[tuple, dict]] = []
    for c in sorted(polygons):
        classification = {"name": str(class_names[c]), "color": [int(v) for v in colors[c]]}
        for poly in polygons[c]:
            geom = _geometry(shapely.normalize(poly), ds, ndigits)
            key = (c, *np.round(poly.bounds, 6).tolist(), round(poly.area, 6))
            props = {"objectType": "annotation", "classification": classification}
            feats.append((key, {"type": "Feature", "geometry": geom, "properties": props}))
    feats.sort(key=lambda kf: kf[0])
    return {"type": "FeatureCollection", "features": [f for _, f in feats]}


def write_geojson(path: str | Path, collection: dict) -> None:
    """Write a FeatureCollection deterministically, one feature per line."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, feat in enumerate(collection["features"]):
            fh.write(("," if i else "") + "\n" + json.dumps(feat, separators=(",", ":")))
        fh.write("\n]}\n")

