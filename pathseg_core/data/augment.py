"""Seeded, label-preserving augmentation of an image and its label map.

Geometric moves (flips, 90° rotations) are applied to image and labels alike; colour
jitter (brightness, contrast, saturation) to the image only. All randomness comes from
the ``torch.Generator`` passed in (the dataset derives it from ``(seed, epoch, index)``),
so a sample is augmented identically whichever worker loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: ITU-R BT.601 luma weights for R, G, B.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augment:
    """Random flips, 90° rotations and mild colour jitter.

    Attributes:
        flips: random horizontal and vertical flips (each with probability 1/2).
        rot90: random rotation by ``k * 90°``; ``k`` in ``0..3`` for square images, ``{0, 2}``
            otherwise (so the shape never changes).
        brightness: scale pixel values by a factor in ``[1 - brightness, 1 + brightness]``.
        contrast: scale deviations from the mean grey by ``[1 - contrast, 1 + contrast]``.
        saturation: scale deviations from each pixel's grey by ``[1 - saturation, 1 + saturation]``.
    """

    flips: bool = True
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1

    def __call__(
        self, image: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]:
        """Augment ``image`` ``[3, H, W]`` uint8 (0..255) and ``labels`` ``[H, W]`` together.

        Returns:
            The augmented image (uint8, same shape) and labels (same dtype and shape).
        """
        # one fixed draw per call keeps the stream layout independent of the flags
        u = torch.rand(6, generator=generator).tolist()
        square = image.shape[-1] == image.shape[-2]
        dims: list[int] = []
        if self.flips and u[0] < 0.5:
            dims.append(-1)
        if self.flips and u[1] < 0.5:
            dims.append(-2)
        k = min(int(u[2] * 4), 3) if self.rot90 else 0
        k = k if square else k & 2
        image, labels = _geometric(image, dims, k), None if labels is None else _geometric(labels, dims, k)
        factors = [1.0 + (2.0 * v - 1.0) * s for v, s in zip(u[3:], (self.brightness, self.contrast, self.saturation))]
        if any(f != 1.0 for f in factors):
            image = _jitter(image, *factors)
        return image, labels


def _geometric(t: Tensor, flip_dims: list[int], k: int) -> Tensor:
    if flip_dims:
        t = torch.flip(t, flip_dims)
    if k:
        t = torch.rot90(t, k, dims=(-2, -1))
    return t.contiguous()


def _jitter(image: Tensor, brightness: float, contrast: float, saturation: float) -> Tensor:
    """Colour jitter on a ``[3, H, W]`` uint8 image; returns uint8."""
    x = image.float() * brightness
    luma = torch.tensor(_LUMA, dtype=x.dtype).view(3, 1, 1)
    mean_grey = (x * luma).sum(0).mean()
    x = (x - mean_grey) * contrast + mean_grey
    grey = (x * luma).sum(0, keepdim=True)
    x = (x - grey) * saturation + grey
    return x.round_().clamp_(0, 255).to(torch.uint8)
