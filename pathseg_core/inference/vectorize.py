"""Class-id mask → QuPath GeoJSON, vectorised band by band and merged across band borders.

Each band of finished rows is traced with :func:`pathseg_core.data.wsi.raster.vectorize`
(marching squares between pixel centres, so rasterising the polygons gives the mask back
exactly) together with one row of each neighbouring band, then clipped to the band's own
strip ``y0 <= y <= y1`` (continuous coordinates, pixel ``(c, r)`` covers
``[c, c+1) × [r, r+1)``). The contour between two rows depends only on those two rows,
which both neighbours see, so a region crossing a border yields two polygons that share
their border edge exactly; ``shapely.unary_union`` merges them into what tracing the
whole mask would give. Only polygons touching the current band's bottom stay *open*; the
rest are *closed* and never touched again, so memory holds one band and the vectors,
never the raster.

Output coordinates are level-0 pixels: output coordinates × ``ds`` (the output pixel size
in level-0 pixels). Features are sorted and coordinates rounded, so the same mask always
gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.raster import vectorize


def polygonal_parts(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside any geometry (collections and multi-parts flattened)."""
    if geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom] if geom.area > 0 else []
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in polygonal_parts(g)]
    return []


class BandVectorizer:
    """Polygons per class from consecutive row bands of a ``[H, W]`` class-id mask.

    Call :meth:`add_band` with the bands top to bottom, then :meth:`polygons`. A band is
    traced when the next one arrives (its first row is needed), the last one in
    :meth:`polygons`.

    Args:
        num_classes: class ids ``1 .. num_classes - 1`` are traced (0 is background).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.closed: dict[int, list[Polygon]] = {c: [] for c in range(1, self.num_classes)}
        self.open: dict[int, list[Polygon]] = {c: [] for c in range(1, self.num_classes)}
        self.next_row = 0
        self.above: np.ndarray | None = None  # last row of the band before the pending one
        self.pending: np.ndarray | None = None
        self.pending_y = 0

    def add_band(self, ids: np.ndarray) -> None:
        """Take ``[h, W]`` uint8 class ids of the next rows (directly below the previous band)."""
        if ids.shape[0] == 0:
            return
        if self.pending is not None:
            self._trace(ids[:1])
        self.pending, self.pending_y = ids, self.next_row
        self.next_row += ids.shape[0]

    def _trace(self, below: np.ndarray | None) -> None:
        band, y0 = self.pending, self.pending_y
        h, w = band.shape
        rows = [r for r in (self.above, band, below) if r is not None]
        top = y0 - (1 if self.above is not None else 0)
        mask = np.concatenate(rows) if len(rows) > 1 else band
        strip = shapely.box(0, y0, w, y0 + h)
        found: dict[int, list[Polygon]] = {c: [] for c in self.closed}
        for ann in vectorize(mask, PatchFrame(0.0, float(top), 1.0, w, mask.shape[0]), skip=(0,)):
            if ann.class_id in found:
                found[ann.class_id].extend(polygonal_parts(ann.geometry.intersection(strip)))
        for c, new in found.items():
            touching = [p for p in new if p.bounds[1] <= y0] if self.above is not None else []
            others = [p for p in new if not (self.above is not None and p.bounds[1] <= y0)]
            parts = polygonal_parts(shapely.unary_union(self.open[c] + touching)) if touching else self.open[c]
            self.open[c] = []
            for p in parts + others:
                (self.open[c] if p.bounds[3] >= y0 + h else self.closed[c]).append(p)
        self.above = band[-1:].copy()
        self.pending = None

    def polygons(self) -> dict[int, list[Polygon]]:
        """All polygons per class in output-pixel coordinates (traces the last band first)."""
        if self.pending is not None:
            self._trace(None)
        return {c: self.closed[c] + self.open[c] for c in self.closed}


def _ring(coords: object, ds: float, ndigits: int) -> list[list[float]]:
    return np.round(np.asarray(coords)[:, :2] * ds, ndigits).tolist()


def feature_collection(
    polygons: dict[int, list[Polygon]],
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    ds: float,
    ndigits: int = 2,
) -> dict:
    """QuPath GeoJSON FeatureCollection: one ``annotation`` per connected polygon, sorted.

    Args:
        polygons: class id → polygons in output-pixel coordinates.
        class_names: names indexed by class id.
        colors: ``[r, g, b]`` per class id.
        ds: output pixel size in level-0 pixels (coordinates are scaled by it).
        ndigits: decimals kept in coordinates.
    """
    feats: list[tuple[tuple, dict]] = []
    for c in sorted(polygons):
        classification = {"name": str(class_names[c]), "color": [int(v) for v in colors[c]]}
        for poly in polygons[c]:
            poly = shapely.normalize(poly)
            rings = [_ring(poly.exterior.coords, ds, ndigits)] + [_ring(r.coords, ds, ndigits) for r in poly.interiors]
            key = (c, *np.round(poly.bounds, 6).tolist(), round(poly.area, 6))
            props = {"objectType": "annotation", "classification": classification}
            feats.append(
                (key, {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings}, "properties": props})
            )
    feats.sort(key=lambda kf: kf[0])
    return {"type": "FeatureCollection", "features": [f for _, f in feats]}


def write_geojson(path: str | Path, collection: dict) -> None:
    """Write a FeatureCollection deterministically, one feature per line."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, feat in enumerate(collection["features"]):
            fh.write(("," if i else "") + "\n" + json.dumps(feat, separators=(",", ":")))
        fh.write("\n]}\n")
