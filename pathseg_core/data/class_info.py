"""Class information every datamodule exposes the same way (read from its ``class_map``)."""

from __future__ import annotations

from pathseg_core.data.class_map import ClassMap


class ClassInfoMixin:
    """``num_classes`` / ``class_names`` / ``class_colors`` / ``ignore_index`` from ``self.class_map``.

    The CLI and ``SegmentationTask.setup`` read these to check that data and model agree.
    """

    class_map: ClassMap

    @property
    def num_classes(self) -> int:
        """Number of target classes."""
        return self.class_map.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names, id order."""
        return list(self.class_map.names)

    @property
    def class_colors(self) -> list[tuple[int, int, int]]:
        """One RGB colour per class, id order (the default palette where the map gives none)."""
        return list(self.class_map.colors)

    @property
    def ignore_index(self) -> int:
        """Label value skipped by losses and metrics."""
        return self.class_map.ignore_index
