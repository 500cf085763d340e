"""``WSIPatchDataset``: labelled patches cut from slides on a grid, at random, or as concentric pairs.

Items are keyed by ``index`` or ``(epoch, index)`` (see
:class:`~pathseg_core.data.sampling.EpochSampler`); random draws come from a generator
keyed on ``(seed, epoch, index)``, so a sample is the same whichever worker loads it.
A sample is the dict :func:`~pathseg_core.data.collate.collate_segbatch` expects, plus
``"context"`` / ``"context_labels"`` for concentric sampling:

* ``"image"`` ``[3, H, W]`` uint8 RGB; ``"labels"`` ``[H, W]`` long class ids;
* ``"context"`` ``[3, H, W]`` uint8, ``"context_labels"`` ``[H, W]`` long (concentric only);
* ``"ignore_index"``, ``"source_id"``, ``"x"``, ``"y"`` (level-0 top-left of the patch),
  ``"level"`` (pyramid level read), ``"mpp"`` (µm per output pixel, or ``None``).

Slides and label sources open lazily in each worker process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from pathseg_core.data.augment import Augment
from pathseg_core.data.sampling import sample_generator
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.labels import LabelSource
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.samplers import ConcentricSampler, RandomForegroundSampler
from pathseg_core.data.wsi.tiling import grid_tiles
from pathseg_core.data.wsi.tissue import TissueMask

Sampling = Literal["grid", "random", "concentric"]


@dataclass
class SlideSource:
    """A slide with its labels and tissue mask.

    Attributes:
        reader: the slide (re-opened lazily per process).
        labels: class ids under a patch.
        tissue: tissue mask for foreground sampling and grid filtering.
    """

    reader: SlideReader
    labels: LabelSource
    tissue: TissueMask


class WSIPatchDataset(Dataset):
    """Labelled patches of slides.

    Args:
        sources: the slides of this split.
        sampling: ``"grid"`` — every tissue tile (deterministic); ``"random"`` —
            ``samples_per_slide`` foreground patches per slide and epoch; ``"concentric"`` —
            patch plus context patch (``context_factor`` × the field of view), centred on
            random foreground points, or on grid tiles with ``random_centres=False``.
        patch_size: side of the (square) patches in output pixels.
        mpp: target µm/px; ``None`` reads level 0.
        stride: grid step in output pixels (default ``patch_size``).
        context_factor: context field of view / patch field of view.
        samples_per_slide: random patches per slide per epoch.
        min_tissue: smallest tissue fraction of a patch (random draws and grid tiles).
        max_attempts: random proposals per sample before giving up.
        random_centres: for ``"concentric"``: random foreground centres (training) or grid
            tile centres (evaluation).
        ignore_index: label value of skipped pixels.
        augment: seeded flips / rotations / colour jitter, identical on patch and context.
        seed: base seed.
    """

    def __init__(
        self,
        sources: Sequence[SlideSource],
        *,
        sampling: Sampling,
        patch_size: int,
        mpp: float | None,
        stride: int | None = None,
        context_factor: float = 2.0,
        samples_per_slide: int = 8,
        min_tissue: float = 0.5,
        max_attempts: int = 100,
        random_centres: bool = True,
        ignore_index: int = 255,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        if sampling not in ("grid", "random", "concentric"):
            raise ValueError(f"sampling must be 'grid', 'random' or 'concentric', got {sampling!r}")
        self.sources = list(sources)
        self.sampling = sampling
        self.patch_size = int(patch_size)
        self.mpp = mpp
        self.context_factor = context_factor
        self.samples_per_slide = samples_per_slide
        self.ignore_index = ignore_index
        self.augment = augment
        self.seed = seed
        self.random = sampling == "random" or (sampling == "concentric" and random_centres)
        overlap = 0 if stride is None else self.patch_size - stride
        self.foreground = [
            RandomForegroundSampler(
                s.reader, s.tissue, size=self.patch_size, mpp=mpp, min_tissue=min_tissue, max_attempts=max_attempts
            )
            for s in self.sources
        ]
        self.concentric = [
            ConcentricSampler(s.reader, size=self.patch_size, mpp=mpp, factor=context_factor) for s in self.sources
        ]
        self.tiles: list[tuple[int, PatchFrame]] = []
        if not self.random:
            for i, s in enumerate(self.sources):
                for tile in grid_tiles(
                    s.reader,
                    tile_size=self.patch_size,
                    mpp=mpp,
                    overlap=overlap,
                    tissue=s.tissue,
                    min_tissue=min_tissue,
                ):
                    self.tiles.append((i, tile.frame))

    def __len__(self) -> int:
        if self.random:
            return len(self.sources) * self.samples_per_slide
        return len(self.tiles)

    def _frame(self, epoch: int, index: int) -> tuple[int, PatchFrame]:
        if not self.random:
            return self.tiles[index]
        slide = index % len(self.sources)
        rng = np.random.default_rng([self.seed, epoch, index])
        return slide, self.foreground[slide].sample(rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        slide, frame = self._frame(epoch, index)
        source = self.sources[slide]
        reader = source.reader
        if self.sampling == "concentric":
            frame, context_frame = self.concentric[slide].frames(*frame.centre)
        else:
            frame = reader.snap_frame(frame)  # labels computed from the frame line up with the pixels
        image, labels = _tensors(reader.read_frame(frame), source.labels.read(frame))
        if self.augment is not None:
            image, labels = self.augment(image, labels, sample_generator(self.seed, epoch, index, stream=2))
        sample: dict[str, object] = {
            "image": image,
            "labels": labels,
            "ignore_index": self.ignore_index,
            "source_id": reader.source_id,
            "x": round(frame.x0),
            "y": round(frame.y0),
            "level": reader.best_level(frame.downsample),
            "mpp": None if reader.mpp is None else reader.mpp * frame.downsample,
        }
        if self.sampling == "concentric":
            context, context_labels = _tensors(reader.read_frame(context_frame), source.labels.read(context_frame))
            if self.augment is not None:  # same stream: the same flips and jitter as the patch
                context, context_labels = self.augment(
                    context, context_labels, sample_generator(self.seed, epoch, index, stream=2)
                )
            sample["context"] = context
            sample["context_labels"] = context_labels
        return sample


def _tensors(rgb: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``[H, W, 3]`` uint8 and ``[H, W]`` ids → ``[3, H, W]`` uint8 and ``[H, W]`` long tensors."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
    return image, torch.from_numpy(np.ascontiguousarray(labels)).long()
