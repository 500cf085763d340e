"""Per-patch class-id labels of a slide, from a QuPath GeoJSON or a label-mask file.

Both sources answer ``read(frame) -> [h, w] int64`` class ids (``ignore_index`` where no
label applies). Two ways to name GeoJSON classes:

* with ``code_names`` (source code → name, e.g. BCSS ``class_names.json``), a name is
  turned into its source code, then the :class:`~pathseg_core.data.class_map.ClassMap`
  maps codes to class ids — exactly as for label masks;
* without, names are the class map's own ``names`` and map to their index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from pathseg_core.data.class_map import ClassMap
from pathseg_core.data.wsi.annotations import AnnotationIndex, read_geojson
from pathseg_core.data.wsi.errors import AnnotationError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.label_mask import LabelMaskReader
from pathseg_core.data.wsi.raster import rasterize

#: File suffixes read as GeoJSON; anything else is a label mask.
GEOJSON_SUFFIXES = (".geojson", ".json")

#: Raster value for pixels no annotation covers, before mapping (never a valid code or id).
_UNCOVERED = -1


class LabelSource(Protocol):
    """Anything that gives class ids under a patch."""

    def read(self, frame: PatchFrame) -> np.ndarray:
        """``[frame.height, frame.width]`` int64 class ids."""
        ...


def read_code_names(path: str | Path) -> dict[int, str]:
    """A ``{"<code>": "<name>", …}`` JSON file (BCSS ``class_names.json`` layout) as ``{code: name}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return {int(k): str(v) for k, v in data.items()}
    except (OSError, json.JSONDecodeError, ValueError, AttributeError) as err:
        raise AnnotationError(f"code-name file {path} must be a JSON object {{code: name}} ({err})") from None


class GeoJSONLabels:
    """Class ids rasterised from the polygons of a GeoJSON file.

    Args:
        path: QuPath GeoJSON in level-0 pixels.
        class_map: target classes (and, with ``code_names``, the code → id mapping).
        slide_size: level-0 ``(width, height)`` the coordinates are checked against.
        code_names: source code → classification name; ``None``: names are ``class_map.names``.
        unannotated: value of pixels no polygon covers — a source code with ``code_names``
            (mapped by the class map), else a class id; ``None`` gives ``ignore_index``.
        on_unknown_class: ``"error"`` or ``"skip"`` features with names outside the mapping.
    """

    def __init__(
        self,
        path: str | Path,
        class_map: ClassMap,
        *,
        slide_size: tuple[int, int] | None = None,
        code_names: Mapping[int, str] | None = None,
        unannotated: int | None = None,
        on_unknown_class: Literal["error", "skip"] = "error",
    ) -> None:
        self.class_map = class_map
        self.use_codes = code_names is not None
        if code_names is not None:
            name_to_value = {name: code for code, name in code_names.items()}
        else:
            name_to_value = {name: i for i, name in enumerate(class_map.names)}
        annotations = read_geojson(
            path, class_map=name_to_value, slide_size=slide_size, on_unknown_class=on_unknown_class
        )
        self.index = AnnotationIndex([a for a in annotations if a.is_area])
        self.unannotated = unannotated
        self.path = Path(path)

    def read(self, frame: PatchFrame) -> np.ndarray:
        """``[h, w]`` int64 class ids under ``frame``."""
        raw = rasterize(self.index.query(frame.bounds), frame, fill=_UNCOVERED)
        covered = raw != _UNCOVERED
        ignore = self.class_map.ignore_index
        if self.unannotated is not None:
            raw[~covered] = self.unannotated
            covered[:] = True
        if not self.use_codes:
            return np.where(covered, raw, ignore)
        out = np.full(raw.shape, ignore, dtype=np.int64)
        if covered.any():
            out[covered] = self.class_map.apply(raw[covered][None, :], name=str(self.path))[0]
        return out


def open_labels(
    path: str | Path,
    class_map: ClassMap,
    *,
    slide_size: tuple[int, int],
    code_names: Mapping[int, str] | None = None,
    unannotated: int | None = None,
    mask_downsample: float = 1.0,
) -> LabelSource:
    """A GeoJSON (``.geojson`` / ``.json``) or label-mask label source, checked against the slide size."""
    path = Path(path)
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        return GeoJSONLabels(path, class_map, slide_size=slide_size, code_names=code_names, unannotated=unannotated)
    reader = LabelMaskReader(path, downsample=mask_downsample, class_map=class_map)
    reader.check_alignment(slide_size)
    return reader
