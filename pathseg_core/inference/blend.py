"""Seamless blending of overlapping tile predictions, keeping only the open rows in memory.

Tiles are laid out on a grid of stride ``S = tile - overlap`` in the output frame (pixels
at the target mpp). :func:`blend_window` weights each tile with a separable linear ramp
over its ``overlap`` border, so that the ramps of two neighbours sum to exactly 1 inside
the overlap: no seams. Because the class map is ``argmax`` over channels, normalising by
the total weight is unnecessary (a positive per-pixel factor does not move the argmax).

:class:`BandAccumulator` holds the accumulated scores of the rows still open — those a
later tile can still touch — in column blocks of ``[C, rows, 512]`` float32.
:meth:`~BandAccumulator.settle` finishes the columns no remaining tile of the band reaches,
:meth:`~BandAccumulator.finish` turns every row above a given row into class ids and drops
it; :meth:`~BandAccumulator.state` / :meth:`~BandAccumulator.from_state` dump and restore
what is left (the resume journal stores it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Reduce = Literal["sum", "max"]

#: Rows argmaxed at once by :meth:`BandAccumulator.finish` (bounds its int64 temporary).
ARGMAX_ROWS = 64
#: Columns per block of :class:`BandAccumulator` (a block is allocated when a tile reaches it).
BLOCK_COLS = 512


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


def argmax_channels(scores: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = argmax(scores, axis=0)`` for ``[C, h, w]`` scores, ties to the lowest channel.

    A running maximum over channels: element-wise passes over contiguous planes, ~5× faster
    than NumPy's argmax along the leading axis, and no int64 result.
    """
    out[...] = 0
    if scores.shape[0] == 1:
        return
    best = scores[0].copy()
    for c in range(1, scores.shape[0]):
        better = scores[c] > best
        out[better] = c
        np.maximum(best, scores[c], out=best)


class _RowBuffer:
    """Scores of the open rows ``[top, top + rows)`` of one column block, ``[C, rows, w]`` float32."""

    def __init__(self, width: int, channels: int, background: float, top: int) -> None:
        self.width, self.channels, self.background, self.top = width, channels, background, top
        self.buf = np.zeros((channels, 0, width), dtype=np.float32)
        self.rows = 0

    @property
    def data(self) -> np.ndarray:
        return self.buf[:, : self.rows]

    def grow(self, bottom: int) -> None:
        rows = bottom - self.top
        if rows <= self.rows:
            return
        if rows > self.buf.shape[1]:
            buf = np.empty((self.channels, rows, self.width), dtype=np.float32)
            buf[:, : self.rows] = self.data
            self.buf = buf
        self.buf[:, self.rows : rows] = 0.0
        self.buf[0, self.rows : rows] = self.background
        self.rows = rows

    def finish(self, upto: int, out: np.ndarray) -> None:
        """Argmax rows ``[top, upto)`` into ``out`` (``[upto - top, w]`` uint8) and drop them."""
        n = upto - self.top
        have = min(self.rows, n)
        for r in range(0, have, ARGMAX_ROWS):  # a few rows at a time, not the band
            argmax_channels(self.buf[:, r : min(r + ARGMAX_ROWS, have)], out[r : min(r + ARGMAX_ROWS, have)])
        out[have:n] = 0  # rows no tile reached: background (all scores 0, or only channel 0 set)
        # Keep only what is still open: the carry into the next band is a few overlap rows,
        # so a block's buffer shrinks back instead of holding a tile's height for good.
        self.buf = self.buf[:, n : self.rows].copy()
        self.rows = self.buf.shape[1]
        self.top = upto


class BandAccumulator:
    """Scores of the open output rows, ``C`` channels, full width, kept in column blocks.

    Every block of ``block`` columns holds its own open rows, allocated when a tile first
    reaches them. :meth:`settle` lets the caller finish the part of a band left of the
    tiles still to come, so a band's scores live only in a window around the tiles being
    added plus the few overlap rows carried into the next band — memory set by the tile
    size, not by the slide's width. Sums and maxima are element-wise, so blocking changes no
    score and no class id.

    Args:
        width: output width ``W`` in pixels.
        channels: number of classes ``C`` (channel 0 is background).
        reduce: ``"sum"`` adds weighted scores (blended semantic tiles); ``"max"`` keeps
            the highest score per channel (prompted masks, which may overlap).
        background: initial score of channel 0 for new rows; with ``"max"`` it is the
            probability a prompt must exceed to paint a pixel (e.g. 0.5).
        top: first open row.
        block: columns per block.
    """

    def __init__(
        self,
        width: int,
        channels: int,
        reduce: Reduce = "sum",
        background: float = 0.0,
        top: int = 0,
        block: int = BLOCK_COLS,
    ) -> None:
        if channels < 1 or width < 1 or block < 1:
            raise BlendError(f"accumulator needs width, channels and block >= 1, got {width}, {channels} and {block}")
        self.width = int(width)
        self.channels = int(channels)
        self.reduce: Reduce = reduce
        self.background = float(background)
        self.block = int(block)
        self.blocks = [
            _RowBuffer(min(self.block, self.width - c0), self.channels, self.background, int(top))
            for c0 in range(0, self.width, self.block)
        ]
        self.top = int(top)
        self._ids: np.ndarray | None = None  # the band being settled: [upto - top, W] uint8
        self._settled = 0  # blocks [0, _settled) are finished up to the pending band's bottom
        self._scratch_buf: np.ndarray | None = None  # scratch for weighted tiles

    def _scratch(self, shape: tuple[int, ...]) -> np.ndarray:
        """A reusable float32 buffer of ``shape`` (weighted tiles are formed there, not in fresh arrays)."""
        size = int(np.prod(shape))
        if self._scratch_buf is None or self._scratch_buf.size < size:
            self._scratch_buf = np.empty(size, dtype=np.float32)
        return self._scratch_buf[:size].reshape(shape)

    @property
    def data(self) -> np.ndarray:
        """The open rows' scores, ``[C, rows, W]`` float32 (a copy; blocks with fewer rows padded as new rows)."""
        rows = max(b.top + b.rows for b in self.blocks) - self.top
        out = np.zeros((self.channels, max(rows, 0), self.width), dtype=np.float32)
        out[0] = self.background
        for j, b in enumerate(self.blocks):
            off = b.top - self.top
            out[:, off : off + b.rows, j * self.block : j * self.block + b.width] = b.data
        return out

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
        if x0 < self._settled * self.block:
            raise BlendError(f"tile at column {x} reaches columns already settled (< {self._settled * self.block})")
        chans = slice(None) if channel is None else slice(channel, channel + 1)
        for j in range(x0 // self.block, (x1 - 1) // self.block + 1):
            block = self.blocks[j]
            b0 = j * self.block
            a, b = max(x0, b0), min(x1, b0 + block.width)
            block.grow(y + h)
            src = scores[:, :, a - x : b - x].astype(np.float32, copy=False)
            dst = block.data[chans, y - block.top : y - block.top + h, a - b0 : b - b0]
            if self.reduce == "sum":
                if weight is not None:
                    src = np.multiply(src, weight[None, :, a - x : b - x], out=self._scratch(src.shape))
                dst += src
            else:
                np.maximum(dst, src, out=dst)

    def settle(self, upto: int, before: int) -> None:
        """Rows ``[top, upto)`` of columns ``[0, before)`` are final: argmax them now and free their scores.

        The caller promises that no later tile touches those pixels (e.g. the remaining
        tiles of the band start at column ``before`` or right of it, and later bands start
        at row ``upto`` or below). :meth:`finish` with the same ``upto`` completes the band.
        """
        if upto < self.top:
            raise BlendError(f"cannot settle up to row {upto}: rows above {self.top} are already finished")
        if self._ids is None:
            self._ids = np.empty((upto - self.top, self.width), dtype=np.uint8)
        elif self._ids.shape[0] != upto - self.top:
            raise BlendError(f"settle up to row {upto} while rows up to {self.top + self._ids.shape[0]} are pending")
        stop = min(max(before, 0) // self.block, len(self.blocks))
        for j in range(self._settled, stop):
            self.blocks[j].finish(upto, self._ids[:, j * self.block : j * self.block + self.blocks[j].width])
        self._settled = max(self._settled, stop)

    def finish(self, upto: int) -> np.ndarray:
        """Class ids of rows ``[top, upto)`` as ``[upto - top, W]`` uint8; those rows are dropped.

        Rows never touched by a tile get class 0 (all scores 0, or only background set).
        Ties go to the lowest class id.
        """
        self.settle(upto, self.width + self.block)
        ids = self._ids
        self._ids, self._settled, self.top = None, 0, upto
        return ids

    def state(self) -> dict[str, np.ndarray]:
        """The open rows as arrays (``top``, ``data``) for the resume journal (between bands only)."""
        if self._ids is not None:
            raise BlendError("state() in the middle of a band: finish it first")
        return {"top": np.asarray(self.top, dtype=np.int64), "data": self.data}

    @classmethod
    def from_state(
        cls,
        state: dict[str, np.ndarray],
        width: int,
        channels: int,
        reduce: Reduce = "sum",
        background: float = 0.0,
        block: int = BLOCK_COLS,
    ) -> BandAccumulator:
        """Rebuild an accumulator from :meth:`state` (shapes checked against ``width`` / ``channels``)."""
        data = np.asarray(state["data"], dtype=np.float32)
        if data.ndim != 3 or data.shape[0] != channels or data.shape[2] != width:
            raise BlendError(f"saved blend state has shape {list(data.shape)}, expected [{channels}, rows, {width}]")
        acc = cls(width, channels, reduce=reduce, background=background, top=int(state["top"]), block=block)
        for j, b in enumerate(acc.blocks):
            b.buf = data[:, :, j * acc.block : j * acc.block + b.width].copy()
            b.rows = data.shape[1]
        return acc
