"""Class-id mask → QuPath GeoJSON, traced tile by tile and merged across tile borders.

Each band of rows is cut into column chunks of at most ``chunk_cols`` columns and each
tile (band × chunk) is traced on its own with :func:`pathseg_core.data.wsi.raster.vectorize`:
one polygon per 4-connected component of a class *inside the tile*, along pixel edges
(continuous coordinates: pixel ``(c, r)`` covers ``[c, c+1) × [r, r+1)``; rasterising the
polygons gives the tile back exactly). So every temporary of the tracing (bool mask, int32
label image, component crops) is bounded by band height × ``chunk_cols``, whatever the
slide's width.

Why tiles can be traced without context and nothing clipped: the rings are exact pixel
edges, not interpolated contours, so the outline between two pixels depends only on those
two pixels — the edge between two rows depends only on those two rows, the edge between
two columns only on those two columns. A region crossing a tile border (a band border
``y = y0`` or a chunk seam ``x = c1``) yields pieces on both sides that share that border
edge exactly, with the same integer vertices, and their union is the region's outline.
(A row or column of context, clipped off again, would give the same pieces: none is traced.)

Pieces are linked where their class continues across a border: for each run of pixel
pairs of the class facing each other across it, a seam point in the middle of the run —
``((a + b) / 2, y0)`` on a band's top border for columns ``[a, b)``, ``(c1, y0 + (a + b) / 2)``
on a chunk's right seam for band-local rows ``[a, b)``. Only pieces holding pixels of that run
touch its seam point (it is a pixel-edge midpoint, or a corner whose four pixels are all
in the run), so diagonal-only contacts, which 4-connectivity does not join, are never
linked. A union-find over the open regions and the band's pieces groups them, and each
region is unioned once, when it is *closed* (no piece touches the latest band's bottom):
one cascaded ``shapely.unary_union`` per region, however many tiles it spans. The union
keeps a vertex wherever a seam cut a straight edge; those collinear vertices are dropped,
so a region has the vertices whole-mask tracing gives it (a ring touching itself at a
corner may come out as a shell and a hole touching it there instead: the same geometry).

Closed regions go straight to the GeoJSON file, so memory holds one tile's temporaries,
one band's pieces and the regions still open — never the raster, nor the whole output.

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


@dataclass
class _Group:
    """Pieces of one region that is still open: ``bottom`` touch the latest band's bottom."""

    pieces: list[Polygon]
    bottom: list[Polygon]


def _run_middles(before: np.ndarray, after: np.ndarray, cls: int) -> np.ndarray:
    """Middles ``(a + b) / 2`` of the index runs ``[a, b)`` where ``cls`` is on both sides of a seam."""
    both = np.concatenate([[False], (before == cls) & (after == cls), [False]])
    edges = np.flatnonzero(np.diff(both.astype(np.int8)))
    return (edges[0::2] + edges[1::2]) / 2.0


#: A finished region: ``(class id, polygon in output-pixel coordinates)``.
Region = tuple[int, Polygon]


def _order(region: Region) -> tuple:
    c, poly = region
    return (c, *np.round(poly.bounds, 6).tolist(), round(poly.area, 6))


class BandVectorizer:
    """Regions per class from consecutive row bands of a ``[H, W]`` class-id mask.

    Call :meth:`add_band` with the bands top to bottom; each call traces its band and
    returns the regions that can no longer grow, and :meth:`finish` returns the rest. A
    band is traced in column chunks; pieces of one region in neighbouring tiles are linked
    where the class continues across their border (4-connectivity) and unioned once, when
    the region is closed — one cascaded union per region, however many tiles it spans.
    Finished regions are handed out, not kept, so memory holds only the regions still open
    (and the previous band's last row).

    Args:
        num_classes: class ids ``1 .. num_classes - 1`` are traced (0 is background).
        chunk_cols: columns traced at a time: bounds the tracing's temporaries to
            band height × ``chunk_cols`` pixels. The regions do not depend on it.
    """

    def __init__(self, num_classes: int, chunk_cols: int = 2048) -> None:
        if chunk_cols < 1:
            raise ValueError(f"chunk_cols must be >= 1, got {chunk_cols}")
        self.num_classes = int(num_classes)
        self.chunk_cols = int(chunk_cols)
        self.groups: dict[int, list[_Group]] = {c: [] for c in range(1, self.num_classes)}
        self.next_row = 0
        self.above: np.ndarray | None = None  # last row of the previous band

    def add_band(self, ids: np.ndarray) -> list[Region]:
        """Trace ``[h, W]`` uint8 class ids of the next rows; returns the regions closed so far, sorted."""
        if ids.ndim != 2 or (self.above is not None and ids.shape[1] != self.above.shape[0]):
            width = "" if self.above is None else f", {self.above.shape[0]}"
            raise ValueError(f"expected a band [rows{width}], got shape {list(ids.shape)}")
        if ids.shape[0] == 0:
            return []
        closed = self._trace(ids, self.next_row)
        self.next_row += ids.shape[0]
        return closed

    def finish(self) -> list[Region]:
        """Close every open region; returns them sorted."""
        closed = []
        for c, groups in self.groups.items():
            for group in groups:
                closed.extend((c, p) for p in _union(group))
            groups.clear()
        return sorted(closed, key=_order)

    def _trace(self, band: np.ndarray, y0: int) -> list[Region]:
        h, w = band.shape
        found: dict[int, list[Polygon]] = {c: [] for c in self.groups}
        seams: dict[int, list[np.ndarray]] = {c: [] for c in self.groups}
        for c0 in range(0, w, self.chunk_cols):
            c1 = min(c0 + self.chunk_cols, w)
            for ann in vectorize(band[:, c0:c1], PatchFrame(float(c0), float(y0), 1.0, c1 - c0, h), skip=(0,)):
                if ann.class_id in found:
                    found[ann.class_id].append(ann.geometry)
            if c1 < w:  # the seam x = c1 between this chunk and the next
                left, right = band[:, c1 - 1], band[:, c1]
                for c in self.groups:
                    ys = y0 + _run_middles(left, right, c)
                    seams[c].append(np.stack([np.full_like(ys, c1), ys], axis=1))
        if self.above is not None:  # the band's top border y = y0
            for c in self.groups:
                xs = _run_middles(self.above, band[0], c)
                seams[c].append(np.stack([xs, np.full_like(xs, y0)], axis=1))
        closed: list[Region] = []
        for c, new in found.items():
            points = np.concatenate(seams[c]) if seams[c] else np.zeros((0, 2))
            closed.extend((c, p) for p in self._link(c, new, points, bottom=float(y0 + h)))
        self.above = band[-1].copy()
        return sorted(closed, key=_order)

    def _link(self, c: int, new: list[Polygon], seams: np.ndarray, bottom: float) -> list[Polygon]:
        """Join new pieces to each other and to the open groups they continue; returns the regions that stopped.

        ``seams`` are ``[K, 2]`` seam points: the pieces that one point touches belong to one region.
        """
        old = self.groups[c]
        parent = list(range(len(old) + len(new)))  # union-find over old groups, then new pieces

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        if len(seams) and new:
            # Old groups can only meet the band's top border: only their bottom pieces matter.
            owners = [g for g, group in enumerate(old) for _ in group.bottom] + list(range(len(old), len(parent)))
            tree = shapely.STRtree([p for group in old for p in group.bottom] + new)
            point_idx, piece_idx = tree.query(shapely.points(seams), predicate="intersects")
            order = np.argsort(point_idx, kind="stable")
            point_idx, piece_idx = point_idx[order], piece_idx[order]
            for k in np.flatnonzero(point_idx[1:] == point_idx[:-1]):  # pieces hit by the same point
                a, b = find(owners[piece_idx[k]]), find(owners[piece_idx[k + 1]])
                if a != b:
                    parent[max(a, b)] = min(a, b)
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
    """The region's polygon(s): its one piece, or the union of its pieces without the seams' collinear vertices."""
    if len(group.pieces) == 1:
        return group.pieces
    return [_drop_collinear(p) for p in polygonal_parts(shapely.unary_union(group.pieces))]


def _drop_collinear(poly: Polygon) -> Polygon:
    """``poly`` without repeated vertices and vertices where a ring goes straight on.

    Exact on pixel-edge polygons: their coordinates are integers, so the cross products are too.
    """
    rings = []
    for ring in (poly.exterior, *poly.interiors):
        xy = shapely.get_coordinates(ring)[:-1]
        xy = xy[(xy != np.roll(xy, 1, axis=0)).any(axis=1)]
        d_in, d_out = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
        rings.append(xy[d_in[:, 0] * d_out[:, 1] != d_in[:, 1] * d_out[:, 0]])
    return Polygon(rings[0], rings[1:])


def vectorize_bands(bands: Iterable[np.ndarray], num_classes: int, chunk_cols: int = 2048) -> list[Region]:
    """All regions of a mask given as row bands, in output order (for small masks and tests)."""
    v = BandVectorizer(num_classes, chunk_cols)
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
