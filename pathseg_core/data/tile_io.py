"""Read image tiles and label masks from disk as numpy arrays (rows, columns order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: File suffixes treated as images / masks when scanning folders (lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

#: PIL modes whose pixel values are label codes as stored.
_CODE_MODES = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"}


class MaskFormatError(ValueError):
    """A mask file is not a single-channel label image."""


def image_shape(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file, from its header only."""
    with Image.open(path) as im:
        return im.height, im.width


def read_rgb(path: str | Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (grey, palette and alpha images are converted)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_label_mask(path: str | Path, allow_color: bool = False) -> np.ndarray:
    """``[H, W]`` integer label codes as stored in the file.

    Palette PNGs give their palette indices. Multi-channel masks are accepted when all
    colour channels are equal; otherwise only with ``allow_color`` (for thresholded binary
    masks saved as lossy RGB JPEG), which converts them to luma.

    Raises:
        MaskFormatError: a genuinely colour-coded mask without ``allow_color``.
    """
    with Image.open(path) as im:
        if im.mode in _CODE_MODES:
            arr = np.asarray(im)
            return arr.astype(np.uint8) if arr.dtype == bool else arr
        rgb = np.asarray(im.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        if allow_color:
            return np.asarray(im.convert("L"))
    raise MaskFormatError(
        f"mask {path} is a colour ({im.mode}) image; save label codes as a single-channel PNG "
        'or use a class map with "threshold"'
    )
