"""Tiny exact models for the ``pathseg segment`` tests (importable as ``tests._segment_models``).

* :class:`SaturationSegmenter` (semantic, 3 classes): class by HSV saturation of 4×4
  average-pooled pixels — background (glass) < ``edges[0]`` <= tissue < ``edges[1]`` <= dark.
* :class:`BoxSegmenter` (promptable): the mask of a box prompt is the box itself, the mask
  of a point prompt a disk of ``radius`` pixels around it.

``PATHSEG_TEST_SLEEP_S`` makes every forward pass sleep (to kill a run mid-way); it is
read from the environment so the checkpoint stays the same.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pathseg_core.contracts import Features, Prediction, PromptableSegmenter, Prompts
from pathseg_core.task import SegmentationTask


def _maybe_sleep() -> None:
    delay = float(os.environ.get("PATHSEG_TEST_SLEEP_S", "0") or 0)
    if delay > 0:
        time.sleep(delay)


class SaturationSegmenter(PromptableSegmenter):
    """Semantic: logits ``-sharpness · (s - centre_c)²`` of the saturation ``s`` at 1/4 resolution."""

    semantic = True
    num_classes = 3

    def __init__(self, centres: tuple[float, float, float] = (0.0, 0.3, 0.6), sharpness: float = 200.0) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.tensor(centres))
        self.sharpness = sharpness

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:  # noqa: D102
        _maybe_sleep()
        pooled = F.avg_pool2d(images, 4)
        mx, mn = pooled.max(1).values, pooled.min(1).values
        return {"embedding": ((mx - mn) / mx.clamp_min(1.0))[:, None]}

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:  # noqa: D102
        s = features["embedding"]
        return Prediction(-self.sharpness * (s - self.centres[None, :, None, None]) ** 2)


class BoxSegmenter(PromptableSegmenter):
    """Promptable: a box prompt's mask is the box, a point prompt's a disk of ``radius`` px."""

    semantic = False

    def __init__(self, radius: float = 6.0) -> None:
        super().__init__()
        self.radius = nn.Parameter(torch.tensor(float(radius)))

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:  # noqa: D102
        _maybe_sleep()
        return {"embedding": images}

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:  # noqa: D102
        images = features["embedding"]
        b, _, h, w = images.shape
        ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1) + 0.5
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w) + 0.5
        if prompts.boxes is not None:
            bx = prompts.boxes[..., None, None]  # [B, N, 4, 1, 1]
            inside = (xs >= bx[:, :, 0]) & (xs < bx[:, :, 2]) & (ys >= bx[:, :, 1]) & (ys < bx[:, :, 3])
        else:
            p = prompts.points[:, :, 0, :, None, None]  # [B, N, 2, 1, 1]
            inside = (xs - p[:, :, 0]) ** 2 + (ys - p[:, :, 1]) ** 2 <= self.radius**2
        return Prediction(torch.where(inside, 8.0, -8.0))


class SaturationTask(SegmentationTask):
    """Task wrapping :class:`SaturationSegmenter`, with a working resolution hyper-parameter."""

    def __init__(
        self,
        target_mpp: float = 1.0,
        num_classes: int = 3,
        class_names: tuple[str, ...] = ("background", "tissue", "dark"),
    ) -> None:
        super().__init__(num_classes=num_classes, class_names=list(class_names))

    def configure_models(self) -> PromptableSegmenter:  # noqa: D102
        return SaturationSegmenter()


class BoxTask(SegmentationTask):
    """Task wrapping :class:`BoxSegmenter`."""

    def __init__(self, target_mpp: float = 1.0, num_classes: int = 2, class_names: list[str] | None = None) -> None:
        super().__init__(num_classes=num_classes, class_names=class_names)

    def configure_models(self) -> PromptableSegmenter:  # noqa: D102
        return BoxSegmenter()


def save_checkpoint(task: lightning.LightningModule, path: str | Path) -> Path:
    """Write a Lightning-format checkpoint (state dict + hyper-parameters) without a Trainer."""
    path = Path(path)
    torch.save(
        {
            "state_dict": task.state_dict(),
            "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


#: The real slide the tests crop from.
CMU_RELATIVE = "wsi/cmu1_small_region/CMU-1-Small-Region.svs"


def make_small_slide(path: str | Path, box: tuple[int, int, int, int] = (300, 1000, 800, 600)) -> Path:
    """A crop ``(x, y, w, h)`` of the CMU slide (white glass on the left, tissue on the right) as a pyramid TIFF."""
    import openslide

    from pathseg_core.data.paths import data_root
    from pathseg_core.testing.fixtures import write_pyramid_tiff

    x, y, w, h = box
    with openslide.OpenSlide(str(data_root() / CMU_RELATIVE)) as slide:
        rgb = np.asarray(slide.read_region((x, y), 0, (w, h)).convert("RGB"))
    return write_pyramid_tiff(path, rgb, mpp=0.499, tile=256, levels=2)


def make_blank_slide(path: str | Path, size: tuple[int, int] = (600, 500)) -> Path:
    """A white ``(width, height)`` slide with mpp 0.5: no tissue anywhere."""
    from pathseg_core.testing.fixtures import write_pyramid_tiff

    return write_pyramid_tiff(path, np.full((size[1], size[0], 3), 245, np.uint8), mpp=0.5, tile=256, levels=1)
