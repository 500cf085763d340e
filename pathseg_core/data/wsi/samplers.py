"""Patch samplers: random foreground patches (HoloHisto) and concentric context pairs (HookNet, WSI-SAM).

Samplers return :class:`~pathseg_core.data.wsi.frames.PatchFrame` geometry; reading pixels is
a separate call, so a dataset can decide what to read. Randomness comes only from the
``numpy.random.Generator`` passed to :meth:`RandomForegroundSampler.sample`.

Concentric geometry: the high-resolution (HR) patch of ``size`` pixels at downsample ``d``
and the context (LR) patch of the same ``size`` at downsample ``f · d`` share their centre,
so the LR patch covers ``f`` times the field of view. An HR pixel coordinate ``u`` maps to
``u / f + size · (1 - 1 / f) / 2`` in the LR patch — for ``f = 2``: ``u / 2 + size / 4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pathseg_core.data.wsi.errors import NoForegroundError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tissue import TissueMask


def hr_to_context(xy: np.ndarray, size: float, factor: float = 2.0) -> np.ndarray:
    """``[..., 2]`` ``xy`` (or ``[..., 4]`` ``xyxy``) in HR patch pixels → context patch pixels.

    ``u_lr = u_hr / factor + size · (1 - 1 / factor) / 2`` for square patches of side ``size``
    that share their centre.
    """
    return np.asarray(xy, dtype=np.float64) / factor + size * (1.0 - 1.0 / factor) / 2.0


@dataclass(frozen=True)
class ConcentricPatch:
    """An HR patch and its context patch.

    Attributes:
        image: ``[size, size, 3]`` uint8 RGB at the target resolution.
        context: ``[size, size, 3]`` uint8 RGB, same centre, ``factor`` × the field of view.
        frame: geometry of ``image``.
        context_frame: geometry of ``context``.
    """

    image: np.ndarray
    context: np.ndarray
    frame: PatchFrame
    context_frame: PatchFrame


class ConcentricSampler:
    """Read concentric (HR, context) pairs around level-0 centres.

    Args:
        reader: the slide.
        size: side of both patches in output pixels.
        mpp: HR resolution in µm/px (or give ``downsample``; neither = level 0).
        downsample: HR level-0 pixels per output pixel.
        factor: context field of view / HR field of view (context downsample = factor · HR).
    """

    def __init__(
        self,
        reader: SlideReader,
        *,
        size: int,
        mpp: float | None = None,
        downsample: float | None = None,
        factor: float = 2.0,
    ) -> None:
        if size <= 0 or factor < 1.0:
            raise ValueError(f"need size > 0 and factor >= 1, got {size} and {factor}")
        self.reader = reader
        self.size = int(size)
        self.factor = float(factor)
        self.downsample, self.mpp = reader.resolve(mpp=mpp, downsample=downsample)

    def frames(self, cx: float, cy: float) -> tuple[PatchFrame, PatchFrame]:
        """HR and context frames centred on level-0 ``(cx, cy)``, snapped to the pixel grids they are read from.

        The context frame is snapped to its level's grid (:meth:`SlideReader.snap_frame`)
        and the HR frame is centred on the snapped context centre. For power-of-two sizes
        and pyramids that HR frame is on its own grid already; otherwise it is snapped as
        well, which moves the two centres apart by under half an HR level pixel (the frames
        still record exactly where each patch is).
        """
        lr = self.reader.snap_frame(PatchFrame.centred(cx, cy, self.downsample * self.factor, self.size, self.size))
        hr = self.reader.snap_frame(PatchFrame.centred(*lr.centre, self.downsample, self.size, self.size))
        return hr, lr

    def read(self, cx: float, cy: float) -> ConcentricPatch:
        """Read the pair centred on level-0 ``(cx, cy)``; parts outside the slide are white."""
        hr, lr = self.frames(cx, cy)
        return ConcentricPatch(self.reader.read_frame(hr), self.reader.read_frame(lr), hr, lr)


class RandomForegroundSampler:
    """Random patches of any size at a target resolution, accepted when tissue fraction ≥ ``min_tissue``.

    Args:
        reader: the slide.
        tissue: its tissue mask.
        size: patch side in output pixels (e.g. 4096 for HoloHisto).
        mpp: target µm/px (or give ``downsample``; neither = level 0).
        downsample: target level-0 pixels per output pixel.
        min_tissue: smallest accepted tissue fraction of the patch footprint.
        max_attempts: proposals tried before :class:`NoForegroundError`.
        propose: ``"tissue"`` centres proposals on random tissue-mask pixels (efficient on
            sparse slides); ``"uniform"`` draws the corner uniformly over the slide.
    """

    def __init__(
        self,
        reader: SlideReader,
        tissue: TissueMask,
        *,
        size: int,
        mpp: float | None = None,
        downsample: float | None = None,
        min_tissue: float = 0.5,
        max_attempts: int = 100,
        propose: Literal["tissue", "uniform"] = "tissue",
    ) -> None:
        if size <= 0 or max_attempts <= 0 or not 0.0 <= min_tissue <= 1.0:
            raise ValueError(
                f"need size > 0, max_attempts > 0, 0 <= min_tissue <= 1; got {size}, {max_attempts}, {min_tissue}"
            )
        self.reader = reader
        self.tissue = tissue
        self.size = int(size)
        self.min_tissue = float(min_tissue)
        self.max_attempts = int(max_attempts)
        self.propose = propose
        self.downsample, self.mpp = reader.resolve(mpp=mpp, downsample=downsample)
        self._points = tissue.tissue_points() if propose == "tissue" else None

    def sample(self, rng: np.random.Generator) -> PatchFrame:
        """A frame (corner snapped to whole level-0 pixels) whose tissue fraction is ≥ ``min_tissue``.

        Raises:
            NoForegroundError: no proposal passed within ``max_attempts``.
        """
        width, height = self.reader.dimensions
        foot = self.size * self.downsample
        sx, sy = self.tissue.scale
        for _ in range(self.max_attempts):
            if self._points is not None:
                if len(self._points) == 0:
                    break
                cx, cy = self._points[rng.integers(len(self._points))] + rng.uniform(-0.5, 0.5, 2) * (sx, sy)
                x0, y0 = cx - foot / 2.0, cy - foot / 2.0
            else:
                x0 = rng.uniform(min(0.0, width - foot), max(0.0, width - foot))
                y0 = rng.uniform(min(0.0, height - foot), max(0.0, height - foot))
            x0, y0 = float(round(x0)), float(round(y0))
            if self.tissue.fraction(x0, y0, foot, foot) >= self.min_tissue:
                return PatchFrame(x0, y0, self.downsample, self.size, self.size)
        res = f"{self.mpp:.3g} µm/px" if self.mpp is not None else f"downsample {self.downsample:.3g}"
        raise NoForegroundError(
            f"no {self.size}x{self.size} patch at {res} with >= {self.min_tissue:.0%} tissue in {self.reader.path} "
            f"after {self.max_attempts} attempts (tissue covers {self.tissue.area_fraction:.1%} of the slide); "
            "lower min_tissue or the patch size"
        )
