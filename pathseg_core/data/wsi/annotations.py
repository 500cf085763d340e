"""QuPath GeoJSON annotations: read, validate, write, and query by region.

Accepted layouts (as QuPath exports them): a ``FeatureCollection``, a single ``Feature``,
or a bare JSON list of Features. Geometries: ``Polygon`` and ``MultiPolygon`` (holes
kept), ``Point`` and ``MultiPoint``. The class is ``properties.classification.name``
(or the legacy string ``properties.classification``); the object type is
``properties.objectType`` (or the legacy feature ``id`` ``"PathAnnotationObject"`` /
``"PathDetectionObject"`` / ``"PathCellObject"``).

Coordinates are level-0 pixels, ``xy``, continuous (pixel ``(c, r)`` covers
``[c, c + 1) × [r, r + 1)``). Validation catches the usual export mistakes: coordinates
outside the slide, and a wrong coordinate frame (a downsampled or normalised export
sits in a tiny corner of the slide; a finer one overshoots it by a factor).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from pathseg_core.data.wsi.errors import AnnotationError, AnnotationNotFoundError

#: Geometry types pathseg reads.
SUPPORTED_GEOMETRIES = ("Polygon", "MultiPolygon", "Point", "MultiPoint")

_LEGACY_OBJECT_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "PathTMACoreObject": "tma_core",
}


@dataclass(frozen=True)
class Annotation:
    """One annotated object in level-0 pixel coordinates.

    Attributes:
        geometry: shapely ``Polygon`` / ``MultiPolygon`` (areas) or ``Point`` / ``MultiPoint``.
        class_name: QuPath classification name, or ``None`` when unclassified.
        class_id: id from the name → id mapping, or ``None`` (no mapping / unclassified).
        object_type: ``"annotation"``, ``"detection"``, ``"cell"`` … (QuPath ``objectType``).
        index: position of the feature in its file (for error messages).
    """

    geometry: BaseGeometry
    class_name: str | None = None
    class_id: int | None = None
    object_type: str = "annotation"
    index: int = 0

    @property
    def is_area(self) -> bool:
        """Whether the geometry is a (multi)polygon."""
        return isinstance(self.geometry, Polygon | MultiPolygon)

    @property
    def is_point(self) -> bool:
        """Whether the geometry is a (multi)point."""
        return isinstance(self.geometry, Point | MultiPoint)


# ---------------------------------------------------------------------------- reading
def read_geojson(
    path: str | Path,
    *,
    class_map: Mapping[str, int] | None = None,
    slide_size: tuple[int, int] | None = None,
    object_types: Sequence[str] | None = ("annotation", "detection", "cell"),
    on_unknown_class: Literal["error", "skip"] = "error",
    tolerance_px: float = 2.0,
    tiny_fraction: float = 0.02,
) -> list[Annotation]:
    """Read and validate a QuPath GeoJSON file.

    Args:
        path: the ``.geojson`` / ``.json`` file.
        class_map: classification name → class id. ``None`` keeps names only (``class_id=None``).
        slide_size: level-0 ``(width, height)``; when given, coordinates are checked against it.
        object_types: keep only these ``objectType`` values (``None``: keep all).
        on_unknown_class: what to do with a feature whose class (or missing class) is not
            in ``class_map``: raise, or drop it.
        tolerance_px: how far (level-0 pixels) geometries may overshoot the slide border.
        tiny_fraction: all coordinates inside this fraction of the slide's width and
            height (top-left corner) flags a wrong frame (0 disables the check).

    Raises:
        AnnotationNotFoundError: the file does not exist.
        AnnotationError: invalid JSON, wrong structure or geometry, unknown class,
            coordinates outside the slide or in a wrong frame.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationNotFoundError(f"annotation file {path} does not exist; check the path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise AnnotationError(f"{path} is not UTF-8 text; export the annotations from QuPath as GeoJSON") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); export it from QuPath as GeoJSON"
        ) from None
    annotations = parse_features(
        data, source=str(path), class_map=class_map, object_types=object_types, on_unknown_class=on_unknown_class
    )
    if slide_size is not None:
        check_in_slide(
            annotations, slide_size, source=str(path), tolerance_px=tolerance_px, tiny_fraction=tiny_fraction
        )
    return annotations


def parse_features(
    data: object,
    *,
    source: str = "<geojson>",
    class_map: Mapping[str, int] | None = None,
    object_types: Sequence[str] | None = None,
    on_unknown_class: Literal["error", "skip"] = "error",
) -> list[Annotation]:
    """Turn decoded GeoJSON (FeatureCollection, Feature or list of Features) into annotations.

    See :func:`read_geojson` for the arguments; ``source`` names the input in errors.
    """
    features = _features(data, source)
    annotations = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            kind = feature.get("type") if isinstance(feature, dict) else type(feature).__name__
            raise AnnotationError(f"item {i} of {source} is a {kind}, not a GeoJSON Feature")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise AnnotationError(f"feature {i} of {source} has non-object properties")
        object_type = _object_type(feature, props)
        if object_types is not None and object_type not in object_types:
            continue
        name = _class_name(props)
        class_id = None
        if class_map is not None:
            if name not in class_map:
                if on_unknown_class == "skip":
                    continue
                known = ", ".join(sorted(class_map))
                raise AnnotationError(
                    f"feature {i} of {source} has class {name!r}, not in the class map ({known}); "
                    "add it to the map or pass on_unknown_class='skip'"
                )
            class_id = int(class_map[name])  # type: ignore[index]
        annotations.append(Annotation(_geometry(feature.get("geometry"), i, source), name, class_id, object_type, i))
    return annotations


def _features(data: object, source: str) -> list[object]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        kind = data.get("type")
        if kind == "FeatureCollection":
            features = data.get("features")
            if not isinstance(features, list):
                raise AnnotationError(f"{source} is a FeatureCollection without a 'features' list")
            return features
        if kind == "Feature":
            return [data]
        raise AnnotationError(
            f"{source} has top-level type {kind!r}; expected a FeatureCollection, a Feature or a list of Features"
        )
    raise AnnotationError(
        f"{source} holds a JSON {type(data).__name__}; expected a FeatureCollection, a Feature or a list"
    )


def _object_type(feature: dict, props: dict) -> str:
    kind = props.get("objectType")
    if isinstance(kind, str):
        return kind
    return _LEGACY_OBJECT_IDS.get(str(feature.get("id", "")), "annotation")


def _class_name(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        return str(name) if name is not None else None
    if isinstance(cls, str):  # legacy exports: the classification is the name itself
        return cls
    return None


def _geometry(geometry: object, index: int, source: str) -> BaseGeometry:
    where = f"feature {index} of {source}"
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise AnnotationError(f"{where} has no geometry object")
    kind = geometry["type"]
    if kind not in SUPPORTED_GEOMETRIES:
        raise AnnotationError(f"{where} has geometry type {kind!r}; supported: {', '.join(SUPPORTED_GEOMETRIES)}")
    try:
        geom = shape(geometry)
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as err:
        raise AnnotationError(f"{where} has malformed {kind} coordinates ({err})") from None
    if geom.is_empty:
        raise AnnotationError(f"{where} has an empty {kind}")
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise AnnotationError(f"{where} has non-finite coordinates")
    if isinstance(geom, Polygon | MultiPolygon):
        if not geom.is_valid:  # self-intersections etc.: repair, keep the polygonal part
            geom = _polygonal(shapely.make_valid(geom))
        if geom.is_empty or geom.area <= 0:
            raise AnnotationError(f"{where} is a {kind} with zero area")
    return geom


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The (multi)polygon part of a repaired geometry."""
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon | MultiPolygon)]
    polys = [p for g in parts for p in getattr(g, "geoms", [g])]
    if not polys:
        return Polygon()
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


# ---------------------------------------------------------------------------- validation
def check_in_slide(
    annotations: Sequence[Annotation],
    slide_size: tuple[int, int],
    *,
    source: str = "<geojson>",
    tolerance_px: float = 2.0,
    tiny_fraction: float = 0.02,
    overshoot_factor: float = 1.5,
) -> None:
    """Raise :class:`AnnotationError` if the annotations do not fit a ``(width, height)`` slide.

    Checks, in order: a frame mistake by a factor (coordinates reach ≥ ``overshoot_factor``
    × the slide size), any feature outside the slide by more than ``tolerance_px``, and all
    coordinates within the top-left ``tiny_fraction`` of the slide.
    """
    if not annotations:
        return
    width, height = slide_size
    bounds = np.array([a.geometry.bounds for a in annotations])  # [N, 4] xmin ymin xmax ymax
    xmax, ymax = bounds[:, 2].max(), bounds[:, 3].max()
    hint = "GeoJSON must be in level-0 pixels of the slide"
    factor = max(xmax / width, ymax / height)
    if factor >= overshoot_factor:
        raise AnnotationError(
            f"coordinates in {source} reach ({xmax:.0f}, {ymax:.0f}), {factor:.1f}x beyond the {width}x{height} slide; "
            f"{hint} — were they exported for another image or resolution?"
        )
    outside = (bounds[:, 0] < -tolerance_px) | (bounds[:, 1] < -tolerance_px)
    outside |= (bounds[:, 2] > width + tolerance_px) | (bounds[:, 3] > height + tolerance_px)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        b = ", ".join(f"{v:.0f}" for v in bounds[i])
        raise AnnotationError(
            f"feature {annotations[i].index} of {source} lies outside the {width}x{height} slide (bounds {b}); {hint}"
        )
    if (
        tiny_fraction > 0
        and xmax <= width * tiny_fraction
        and ymax <= height * tiny_fraction
        and max(width, height) >= 1000
    ):
        raise AnnotationError(
            f"all coordinates in {source} lie within the top-left {tiny_fraction:.0%} of the {width}x{height} slide "
            f"(max {xmax:.1f}, {ymax:.1f}); {hint} — were they exported at a downsampled level or normalised?"
        )


# ---------------------------------------------------------------------------- writing
def to_feature(annotation: Annotation, color: tuple[int, int, int] | None = None) -> dict:
    """One annotation as a QuPath-style GeoJSON Feature."""
    props: dict[str, object] = {"objectType": annotation.object_type}
    if annotation.class_name is not None:
        classification: dict[str, object] = {"name": annotation.class_name}
        if color is not None:
            classification["color"] = [int(c) for c in color]
        props["classification"] = classification
    return {"type": "Feature", "geometry": mapping(annotation.geometry), "properties": props}


def write_geojson(
    annotations: Iterable[Annotation],
    path: str | Path,
    *,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write a FeatureCollection QuPath imports (File → Import objects); returns ``path``."""
    colors = colors or {}
    features = [to_feature(a, colors.get(a.class_name or "")) for a in annotations]
    path = Path(path)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


# ---------------------------------------------------------------------------- querying
class AnnotationIndex:
    """Annotations of one slide with a spatial index (``shapely.STRtree``) for per-patch queries."""

    def __init__(self, annotations: Sequence[Annotation]) -> None:
        self.annotations = list(annotations)
        self._tree = shapely.STRtree([a.geometry for a in self.annotations])

    def __len__(self) -> int:
        return len(self.annotations)

    def query(self, bounds: tuple[float, float, float, float]) -> list[Annotation]:
        """Annotations whose geometry intersects level-0 ``(xmin, ymin, xmax, ymax)``, in file order."""
        if not self.annotations:
            return []
        hits = self._tree.query(shapely.box(*bounds), predicate="intersects")
        return [self.annotations[i] for i in sorted(int(i) for i in hits)]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Level-0 bounding box of all annotations (NaNs when empty)."""
        if not self.annotations:
            return (math.nan,) * 4  # type: ignore[return-value]
        b = np.array([a.geometry.bounds for a in self.annotations])
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())
