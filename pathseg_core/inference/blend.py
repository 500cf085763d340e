"""Seamless blending of overlapping tile predictions, keeping only the open rows in memory.

Tiles are laid out on a grid of stride ``S = tile - overlap`` in the output frame (pixels
at the target mpp). :func:`blend_window` weights each tile with a separable linear ramp
over its ``overlap`` border, so that the ramps of two neighbours sum to exactly 1 inside
the overlap: no seams. Because the class map is ``argmax`` over channels, normalising by
the total weight is unnecessary (a positive per-pixel factor does not move the argmax).

:class:`BandAccumulator` holds the accumulated scores of the rows still open — those a
later tile can still touch — as a ``[C, rows, W]`` float32 array. :meth:`finish` turns
every row above a given row into class ids and drops it; :meth:`state` /
:meth:`from_state` dump and restore what is left (the resume journal stores it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Reduce = Literal["sum", "max"]

#: Rows argmaxed at once by :meth:`BandAccumulator.finish` (bounds its int64 temporary).
ARGMAX_ROWS = 64


class BlendError(ValueError):
    """A tile does not fit the accumulator (wrong channel count or above the open rows)."""


def ramp(size: int, overlap: int) -> np.ndarray:
    """``[size]`` float32 1-D weights: linear ramps over ``overlap`` pixels at both ends.

    ``w[i] = min(1, (i + 0.5) / overlap, (size - i - 0.5) / overlap)``; the descending ramp
    of one tile and the ascending ramp of the next (stride ``size - overlap``) sum to 1.
    """
    if overlap < 0 or 2 * overlap > size:
        raise BlendError(f"overlap {overlap} must be in 0..{size // 2} for tiles of {size} px")
    i = np.arange(size, dtype=np.float64) + 0.5
    if overlap == 0:
        return np.ones(size, dtype=np.float32)
    w = np.minimum(1.0, np.minimum(i / overlap, (size - i) / overlap))
    return w.astype(np.float32)


def blend_window(size: int, overlap: int) -> np.ndarray:
    """``[size, size]`` float32 weights (rows × cols): the outer product of :func:`ramp`."""
    r = ramp(size, overlap)
    return np.outer(r, r).astype(np.float32)


class BandAccumulator:
    """Scores of the open output rows ``[top, top + rows)``, full width, ``C`` channels.

    Args:
        width: output width ``W`` in pixels.
        channels: number of classes ``C`` (channel 0 is background).
        reduce: ``"sum"`` adds weighted scores (blended semantic tiles); ``"max"`` keeps
            the highest score per channel (prompted masks, which may overlap).
        background: initial score of channel 0 for new rows; with ``"max"`` it is the
            probability a prompt must exceed to paint a pixel (e.g. 0.5).
        top: first open row.
    """

    def __init__(
        self, width: int, channels: int, reduce: Reduce = "sum", background: float = 0.0, top: int = 0
    ) -> None:
        if channels < 1 or width < 1:
            raise BlendError(f"accumulator needs width >= 1 and channels >= 1, got {width} and {channels}")
        self.width = int(width)
        self.channels = int(channels)
        self.reduce: Reduce = reduce
        self.background = float(background)
        self.top = int(top)
        # Rows live in one buffer that is allocated when a tile first reaches past it and
        # then reused band after band (finished rows are shifted out in place), so a run
        # holds one [C, tile rows, W] array instead of re-allocating it for every band.
        self._buf = np.zeros((self.channels, 0, self.width), dtype=np.float32)
        self._rows = 0

    @property
    def data(self) -> np.ndarray:
        """The open rows' scores, ``[C, rows, W]`` float32 (a view of the buffer)."""
        return self._buf[:, : self._rows]

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._buf = np.array(value, dtype=np.float32)
        self._rows = self._buf.shape[1]

    @property
    def bottom(self) -> int:
        """One past the last allocated row."""
        return self.top + self._rows

    def _grow(self, bottom: int) -> None:
        rows = bottom - self.top
        if rows <= self._rows:
            return
        if rows > self._buf.shape[1]:
            buf = np.empty((self.channels, rows, self.width), dtype=np.float32)
            buf[:, : self._rows] = self.data
            self._buf = buf
        self._buf[:, self._rows : rows] = 0.0
        self._buf[0, self._rows : rows] = self.background
        self._rows = rows

    def add(
        self, scores: np.ndarray, y: int, x: int, weight: np.ndarray | None = None, channel: int | None = None
    ) -> None:
        """Accumulate a tile's scores whose top-left output pixel is ``(row y, col x)``.

        Args:
            scores: ``[C, h, w]`` float probabilities for the tile, or ``[1, h, w]`` when
                ``channel`` is given.
            y: output row of the tile's first row (``>= top``; may run past the bottom).
            x: output column of the tile's first column (may be negative or run past ``W``;
                the part outside ``0..W`` is dropped).
            weight: ``[h, w]`` blending weights (``"sum"`` only; ones when ``None``).
            channel: accumulate a single-channel ``scores`` into this channel only.
        """
        c, h, w = scores.shape
        expected = 1 if channel is not None else self.channels
        if c != expected:
            raise BlendError(f"tile has {c} channels but {expected} were expected")
        if channel is not None and not 0 <= channel < self.channels:
            raise BlendError(f"channel {channel} outside 0..{self.channels - 1}")
        if y < self.top:
            raise BlendError(f"tile at row {y} starts above the first open row {self.top}")
        x0, x1 = max(x, 0), min(x + w, self.width)
        if x1 <= x0 or h == 0:
            return
        self._grow(y + h)
        src = scores[:, :, x0 - x : x1 - x].astype(np.float32, copy=False)
        chans = slice(None) if channel is None else slice(channel, channel + 1)
        dst = self.data[chans, y - self.top : y - self.top + h, x0:x1]
        if self.reduce == "sum":
            if weight is not None:
                src = src * weight[None, :, x0 - x : x1 - x]
            dst += src
        else:
            np.maximum(dst, src, out=dst)

    def finish(self, upto: int) -> np.ndarray:
        """Class ids of rows ``[top, upto)`` as ``[upto - top, W]`` uint8; those rows are dropped.

        Rows never touched by a tile get class 0 (all scores 0, or only background set).
        Ties go to the lowest class id.
        """
        if upto < self.top:
            raise BlendError(f"cannot finish up to row {upto}: rows above {self.top} are already finished")
        self._grow(upto)
        n = upto - self.top
        ids = np.empty((n, self.width), dtype=np.uint8)
        for r in range(0, n, ARGMAX_ROWS):  # int64 argmax of a few rows at a time, not of the band
            ids[r : r + ARGMAX_ROWS] = np.argmax(self._buf[:, r : min(r + ARGMAX_ROWS, n)], axis=0)
        rest = self._rows - n
        self._buf[:, :rest] = self._buf[:, n : self._rows]
        self._rows = rest
        self.top = upto
        return ids

    def state(self) -> dict[str, np.ndarray]:
        """The open rows as arrays (``top``, ``data``) for the resume journal."""
        return {"top": np.asarray(self.top, dtype=np.int64), "data": self.data}

    @classmethod
    def from_state(
        cls, state: dict[str, np.ndarray], width: int, channels: int, reduce: Reduce = "sum", background: float = 0.0
    ) -> BandAccumulator:
        """Rebuild an accumulator from :meth:`state` (shapes checked against ``width`` / ``channels``)."""
        data = np.asarray(state["data"], dtype=np.float32)
        if data.ndim != 3 or data.shape[0] != channels or data.shape[2] != width:
            raise BlendError(f"saved blend state has shape {list(data.shape)}, expected [{channels}, rows, {width}]")
        acc = cls(width, channels, reduce=reduce, background=background, top=int(state["top"]))
        acc.data = data.copy()
        return acc
