"""Class-id mask → QuPath GeoJSON, vectorised band by band and merged across band borders.

Each band of finished rows is traced with :func:`pathseg_core.data.wsi.raster.vectorize`
(one polygon per 4-connected component; rasterising them gives the mask back exactly)
together with one row of each neighbouring band, then clipped to the band's own strip
``y0 <= y <= y1`` (continuous coordinates: pixel ``(c, r)`` covers ``[c, c+1) × [r, r+1)``).
The outline between two rows depends only on those two rows, which both neighbours see,
so however the tracer treats a patch border, a region crossing a band border yields
pieces that share their border edge exactly.

Pieces are linked where their class continues across the seam (same column, both rows)
and each region is unioned once, when it is *closed* (no piece touches the latest band's
bottom): one cascaded ``shapely.unary_union`` per region, however many bands it spans.
Closed regions go straight to the GeoJSON file, so memory holds one band and the regions
still open — never the raster, nor the whole vector output.

Output coordinates are level-0 pixels: output coordinates × ``ds`` (the output pixel size
in level-0 pixels). Regions are written in the order they close, each batch sorted by
class, bounds and area, with rounded coordinates: the same mask always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import shapely
from shapely.geometry import Point, Polygon
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


@dataclass
class _Group:
    """Band pieces of one region that is still open: ``bottom`` touch the latest band's bottom."""

    pieces: list[Polygon]
    bottom: list[Polygon]


def _seam_points(above: np.ndarray, first: np.ndarray, cls: int, y: float) -> list[Point]:
    """Midpoints (on the seam line ``y``) of the column runs where ``cls`` continues across the seam."""
    both = np.concatenate([[False], (above == cls) & (first == cls), [False]])
    edges = np.flatnonzero(np.diff(both.astype(np.int8)))
    return [Point((a + b) / 2.0, y) for a, b in zip(edges[0::2], edges[1::2])]


#: A finished region: ``(class id, polygon in output-pixel coordinates)``.
Region = tuple[int, Polygon]


def _order(region: Region) -> tuple:
    c, poly = region
    return (c, *np.round(poly.bounds, 6).tolist(), round(poly.area, 6))


class BandVectorizer:
    """Regions per class from consecutive row bands of a ``[H, W]`` class-id mask.

    Call :meth:`add_band` with the bands top to bottom; each call returns the regions
    that can no longer grow, and :meth:`finish` returns the rest. A band is traced when
    the next one arrives (its first row is needed). Pieces of one region in successive
    bands are linked where the class continues across the seam (4-connectivity) and
    unioned once, when the region is closed — one cascaded union per region, however many
    bands it spans. Finished regions are handed out, not kept, so memory holds only the
    regions still open.

    Args:
        num_classes: class ids ``1 .. num_classes - 1`` are traced (0 is background).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.groups: dict[int, list[_Group]] = {c: [] for c in range(1, self.num_classes)}
        self.next_row = 0
        self.above: np.ndarray | None = None  # last row of the band before the pending one
        self.pending: np.ndarray | None = None
        self.pending_y = 0

    def add_band(self, ids: np.ndarray) -> list[Region]:
        """Take ``[h, W]`` uint8 class ids of the next rows; returns the regions closed so far, sorted."""
        if ids.shape[0] == 0:
            return []
        closed = self._trace(ids[:1]) if self.pending is not None else []
        self.pending, self.pending_y = ids, self.next_row
        self.next_row += ids.shape[0]
        return closed

    def finish(self) -> list[Region]:
        """Trace the last band and close every open region; returns them sorted."""
        closed = self._trace(None) if self.pending is not None else []
        for c, groups in self.groups.items():
            for group in groups:
                closed.extend((c, p) for p in _union(group))
            groups.clear()
        return sorted(closed, key=_order)

    def _trace(self, below: np.ndarray | None) -> list[Region]:
        band, y0 = self.pending, self.pending_y
        h, w = band.shape
        rows = [r for r in (self.above, band, below) if r is not None]
        top = y0 - (1 if self.above is not None else 0)
        mask = np.concatenate(rows) if len(rows) > 1 else band
        strip = shapely.box(0, y0, w, y0 + h)
        found: dict[int, list[Polygon]] = {c: [] for c in self.groups}
        for ann in vectorize(mask, PatchFrame(0.0, float(top), 1.0, w, mask.shape[0]), skip=(0,)):
            if ann.class_id in found:
                found[ann.class_id].extend(polygonal_parts(ann.geometry.intersection(strip)))
        closed: list[Region] = []
        for c, new in found.items():
            seams = [] if self.above is None else _seam_points(self.above[0], band[0], c, float(y0))
            closed.extend((c, p) for p in self._link(c, new, seams, bottom=float(y0 + h)))
        self.above = band[-1:].copy()
        self.pending = None
        return sorted(closed, key=_order)

    def _link(self, c: int, new: list[Polygon], seams: list[Point], bottom: float) -> list[Polygon]:
        """Join new pieces to the open groups they continue; returns the regions that stopped."""
        old = self.groups[c]
        parent = list(range(len(old) + len(new)))  # union-find over old groups, then new pieces

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        if seams and old and new:
            owners = [g for g, group in enumerate(old) for _ in group.bottom]
            old_tree = shapely.STRtree([p for group in old for p in group.bottom])
            new_tree = shapely.STRtree(new)
            for point in seams:
                hits = [owners[i] for i in old_tree.query(point, predicate="intersects")]
                hits += [len(old) + int(i) for i in new_tree.query(point, predicate="intersects")]
                for other in hits[1:]:
                    parent[find(other)] = find(hits[0])
        merged: dict[int, _Group] = {}
        for i in range(len(old) + len(new)):
            group = merged.setdefault(find(i), _Group([], []))
            if i < len(old):
                group.pieces.extend(old[i].pieces)
            else:
                piece = new[i - len(old)]
                group.pieces.append(piece)
                if piece.bounds[3] >= bottom:
                    group.bottom.append(piece)
        self.groups[c] = [g for g in merged.values() if g.bottom]
        return [p for g in merged.values() if not g.bottom for p in _union(g)]


def _union(group: _Group) -> list[Polygon]:
    return group.pieces if len(group.pieces) == 1 else polygonal_parts(shapely.unary_union(group.pieces))


def vectorize_bands(bands: Iterable[np.ndarray], num_classes: int) -> list[Region]:
    """All regions of a mask given as row bands, in output order (for small masks and tests)."""
    v = BandVectorizer(num_classes)
    regions = [r for ids in bands for r in v.add_band(ids)]
    return regions + v.finish()


def _ring(coords: object, ds: float, ndigits: int) -> list[list[float]]:
    return np.round(np.asarray(coords)[:, :2] * ds, ndigits).tolist()


def region_feature(
    region: Region, class_names: Sequence[str], colors: Sequence[Sequence[int]], ds: float, ndigits: int = 2
) -> dict:
    """One region as a QuPath GeoJSON ``annotation`` Feature in level-0 pixels (output coordinates × ``ds``)."""
    c, poly = region
    poly = shapely.normalize(poly)
    rings = [_ring(poly.exterior.coords, ds, ndigits)] + [_ring(r.coords, ds, ndigits) for r in poly.interiors]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": rings},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": str(class_names[c]), "color": [int(v) for v in colors[c]]},
        },
    }


class GeoJSONWriter:
    """Write a FeatureCollection feature by feature (one per line) as regions are finished.

    Args:
        path: output file.
        class_names: names indexed by class id.
        colors: ``[r, g, b]`` per class id.
        ds: output pixel size in level-0 pixels.
        ndigits: decimals kept in coordinates.
    """

    def __init__(
        self, path: str | Path, class_names: Sequence[str], colors: Sequence[Sequence[int]], ds: float, ndigits: int = 2
    ) -> None:
        self.path = Path(path)
        self.class_names, self.colors, self.ds, self.ndigits = list(class_names), colors, float(ds), ndigits
        self.count = 0
        self._fh: TextIO | None = None

    def __enter__(self) -> GeoJSONWriter:
        self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        self._fh.write('{"type": "FeatureCollection", "features": [')
        return self

    def write(self, regions: Iterable[Region]) -> None:
        """Append regions as features."""
        for region in regions:
            feat = region_feature(region, self.class_names, self.colors, self.ds, self.ndigits)
            self._fh.write(("," if self.count else "") + "\n" + json.dumps(feat, separators=(",", ":")))
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._fh.write("\n]}\n")
        self._fh.close()
