"""``PatchFrame``: where a patch sits on its slide, and point / box mapping between frames.

Convention: continuous pixel coordinates, ``xy`` order. Patch pixel ``(c, r)`` (column,
row) covers ``[c, c + 1) × [r, r + 1)``; its centre is ``(c + 0.5, r + 0.5)``. A patch
point ``u`` sits at level-0 ``X = x0 + u · downsample``. Boxes are ``xyxy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchFrame:
    """A patch of ``width × height`` pixels whose top-left corner is level-0 ``(x0, y0)``.

    Attributes:
        x0, y0: level-0 position of the patch's top-left corner (may be fractional or
            outside the slide).
        downsample: level-0 pixels per patch pixel (``target_mpp / slide_mpp``).
        width, height: patch size in its own pixels.
    """

    x0: float
    y0: float
    downsample: float
    width: int
    height: int

    @property
    def footprint(self) -> tuple[float, float]:
        """Level-0 ``(width, height)`` the patch covers."""
        return self.width * self.downsample, self.height * self.downsample

    @property
    def centre(self) -> tuple[float, float]:
        """Level-0 ``xy`` of the patch centre."""
        w0, h0 = self.footprint
        return self.x0 + w0 / 2.0, self.y0 + h0 / 2.0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Level-0 ``(xmin, ymin, xmax, ymax)``."""
        w0, h0 = self.footprint
        return self.x0, self.y0, self.x0 + w0, self.y0 + h0

    @classmethod
    def centred(cls, cx: float, cy: float, downsample: float, width: int, height: int) -> PatchFrame:
        """The frame of that size and resolution centred on level-0 ``(cx, cy)``."""
        return cls(cx - width * downsample / 2.0, cy - height * downsample / 2.0, downsample, width, height)

    def to_level0(self, xy: np.ndarray) -> np.ndarray:
        """``[..., 2]`` patch ``xy`` → level-0 ``xy`` (float64)."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * self.downsample + np.array([self.x0, self.y0])

    def from_level0(self, xy: np.ndarray) -> np.ndarray:
        """``[..., 2]`` level-0 ``xy`` → patch ``xy`` (float64)."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.array([self.x0, self.y0])) / self.downsample

    def boxes_from_level0(self, boxes: np.ndarray) -> np.ndarray:
        """``[..., 4]`` level-0 ``xyxy`` → patch ``xyxy``."""
        boxes = np.asarray(boxes, dtype=np.float64)
        return self.from_level0(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)

    def boxes_to_level0(self, boxes: np.ndarray) -> np.ndarray:
        """``[..., 4]`` patch ``xyxy`` → level-0 ``xyxy``."""
        boxes = np.asarray(boxes, dtype=np.float64)
        return self.to_level0(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)


def map_points(xy: np.ndarray, src: PatchFrame, dst: PatchFrame) -> np.ndarray:
    """``[..., 2]`` ``xy`` in ``src`` patch pixels → ``dst`` patch pixels (through level 0)."""
    return dst.from_level0(src.to_level0(xy))


def map_boxes(boxes: np.ndarray, src: PatchFrame, dst: PatchFrame) -> np.ndarray:
    """``[..., 4]`` ``xyxy`` in ``src`` patch pixels → ``dst`` patch pixels."""
    return dst.boxes_from_level0(src.boxes_to_level0(boxes))
