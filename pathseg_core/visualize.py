"""Overlay rendering shared by training logs, the demo and ``pathseg segment``."""

from __future__ import annotations

import numpy as np

from pathseg_core.data.class_map import DEFAULT_PALETTE


def palette(num_classes: int, colors: list[list[int]] | None = None) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours: the given ones, else the default palette (cycled)."""
    if colors is not None:
        return np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[:num_classes]
    return np.asarray([DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(num_classes)], dtype=np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.45,
            ignore_index: int = 255) -> np.ndarray:
    """Blend class colours over an image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        labels: ``[H, W]`` integer class ids; 0 and ``ignore_index`` stay unpainted.
        colors: ``[K, 3]`` uint8 colours indexed by class id.
        alpha: opacity of the colour.
        ignore_index: label value left unpainted.
    """
    out = image.astype(np.float32).copy()
    paint = (labels > 0) & (labels != ignore_index) & (labels < len(colors))
    out[paint] = (1 - alpha) * out[paint] + alpha * colors[labels[paint]].astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def panel(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Side-by-side ``image | ground truth overlay | prediction overlay`` (truth optional)."""
    tiles = [image]
    if truth is not None:
        tiles.append(overlay(image, truth, colors))
    tiles.append(overlay(image, pred, colors))
    return np.concatenate(tiles, axis=1)
