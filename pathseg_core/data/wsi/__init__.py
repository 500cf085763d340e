"""Whole-slide images: reading at a physical resolution, tissue detection, tiling, samplers, annotations.

Modules (one idea each):

* :mod:`.reader` — :class:`SlideReader` (OpenSlide, tifffile fallback; level-0 coordinates, target mpp);
* :mod:`.tissue` — cached tissue masks; :mod:`.tiling` — tissue-filtered grids;
* :mod:`.samplers` — random foreground and concentric context sampling;
* :mod:`.frames` — :class:`PatchFrame` and point / box mapping between frames;
* :mod:`.annotations`, :mod:`.raster`, :mod:`.label_mask`, :mod:`.labels`, :mod:`.prompts` —
  QuPath GeoJSON, rasterisation, label masks, annotations as prompts;
* :mod:`.dataset`, :mod:`.datamodule` — :class:`WSIPatchDataModule` (imports Lightning; not re-exported here).
"""

from pathseg_core.data.wsi.annotations import Annotation, AnnotationIndex, read_geojson, write_geojson
from pathseg_core.data.wsi.errors import (
    AnnotationError,
    AnnotationNotFoundError,
    MppMissingError,
    NoForegroundError,
    ResolutionError,
    SlideFormatError,
    SlideNotFoundError,
)
from pathseg_core.data.wsi.frames import PatchFrame, map_boxes, map_points
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.samplers import ConcentricSampler, RandomForegroundSampler, hr_to_context
from pathseg_core.data.wsi.tiling import TileRecord, grid_tiles, read_tile
from pathseg_core.data.wsi.tissue import TissueMask, TissueParams, detect_tissue

__all__ = [
    "Annotation",
    "AnnotationError",
    "AnnotationIndex",
    "AnnotationNotFoundError",
    "ConcentricSampler",
    "MppMissingError",
    "NoForegroundError",
    "PatchFrame",
    "RandomForegroundSampler",
    "ResolutionError",
    "SlideFormatError",
    "SlideNotFoundError",
    "SlideReader",
    "TileRecord",
    "TissueMask",
    "TissueParams",
    "detect_tissue",
    "grid_tiles",
    "hr_to_context",
    "map_boxes",
    "map_points",
    "read_geojson",
    "read_tile",
    "write_geojson",
]
