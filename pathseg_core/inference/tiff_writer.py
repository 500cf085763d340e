"""Stream a class-id mask into a lossless, tiled, pyramidal TIFF without holding it in memory.

Level 0 is written by ``tifffile`` from a generator of tiles that pulls row chunks as the
caller produces them (``TiffWriter.write(data=iterator, shape=…, tile=…)``), so inference
runs *inside* the write. Each completed row of tiles is also reduced 2× by block mode
(:func:`mode_downsample2`) level after level, and the reduced rows are spilled to raw
``uint8`` files on disk (plain writes and reads, not memory maps, whose pages would count
as resident memory); after level 0 the sub-resolution levels are written from those files.

The file is deterministic: deflate compression, no DateTime / Software / description
tags. Resolution tags carry the physical pixel size (ResolutionUnit centimetre,
XResolution = 10000 / mpp px/cm), which OpenSlide reports as ``openslide.mpp-x``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tifffile

#: TIFF compression: deflate is lossless and read by libtiff, OpenSlide and Bio-Formats.
COMPRESSION = "zlib"
#: Rows reduced at once by :func:`mode_downsample2` (even; bounds its temporaries).
MODE_ROWS = 64


class TiffWriteError(ValueError):
    """The row chunks given to the writer do not fit the declared mask shape."""


def mode_downsample2(rows: np.ndarray) -> np.ndarray:
    """2× block-mode reduction of ``[h, w]`` uint8 class ids (``h`` even) → ``[h/2, ceil(w/2)]``.

    Each output pixel is the most frequent id of its 2×2 block; ties go to the highest id
    (so thin foreground survives against background 0). An odd last column is repeated.
    """
    h, w = rows.shape
    if h % 2:
        raise TiffWriteError(f"mode_downsample2 needs an even number of rows, got {h}")
    if h > MODE_ROWS:  # the block statistics take ~40 bytes per pixel: bound them to a few rows
        return np.concatenate([mode_downsample2(rows[y : y + MODE_ROWS]) for y in range(0, h, MODE_ROWS)])
    if w % 2:
        rows = np.concatenate([rows, rows[:, -1:]], axis=1)
    quad = [rows[0::2, 0::2], rows[0::2, 1::2], rows[1::2, 0::2], rows[1::2, 1::2]]
    # Score = 256 · (how often the value occurs in its block) + value; the best score wins.
    # Element-wise over four [h/2, w/2] planes (an argmax over a stacked axis is ~5× slower).
    best_value = best_score = None
    for value in quad:
        count = sum(((value == other).view(np.uint8) for other in quad), np.zeros(value.shape, np.uint8))
        score = count.astype(np.int16) * 256 + value
        if best_score is None:
            best_value, best_score = value.copy(), score
        else:
            better = score > best_score
            np.copyto(best_value, value, where=better)
            np.maximum(best_score, score, out=best_score)
    return best_value


def pyramid_shapes(shape: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of level 0 and each 2× level until the largest side fits in one tile."""
    h, w = shape
    shapes = [(h, w)]
    while max(h, w) > tile:
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((h, w))
    return shapes


class _LevelSpill:
    """One sub-resolution level: reduces incoming rows of the level above and stores them.

    Rows go to a raw ``uint8`` file with plain writes and come back with plain reads, a
    tile row at a time: a memory map's dirty pages would count as resident memory, and a
    level is a quarter of the area of the one above.
    """

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.path = path
        self.file = open(path, "w+b")  # noqa: SIM115 - closed by close()
        self.pending = np.zeros((0, 0), dtype=np.uint8)
        self.row = 0

    def push(self, rows: np.ndarray, final: bool) -> np.ndarray:
        """Reduce ``rows`` (of the level above), store them, and return the reduced rows."""
        rows = rows if self.pending.shape[0] == 0 else np.concatenate([self.pending, rows])
        if final and rows.shape[0] % 2:
            rows = np.concatenate([rows, rows[-1:]])
        keep = rows.shape[0] - rows.shape[0] % 2
        self.pending = rows[keep:]
        out = mode_downsample2(rows[:keep]) if keep else np.zeros((0, self.shape[1]), dtype=np.uint8)
        out = np.ascontiguousarray(out[: self.shape[0] - self.row])
        self.file.seek(self.row * self.shape[1])
        self.file.write(out.tobytes())
        self.row += out.shape[0]
        return out

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Stored rows ``[y0, y1)`` as ``[rows, W]`` uint8."""
        w = self.shape[1]
        if self.file.closed:
            self.file = open(self.path, "r+b")  # noqa: SIM115 - closed by close()
        self.file.flush()
        self.file.seek(y0 * w)
        return np.frombuffer(self.file.read((y1 - y0) * w), dtype=np.uint8).reshape(-1, w)

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def _tiles_of(rows: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """Tiles of one tile-row (``[<=tile, W]``), left to right, zero-padded to ``[tile, tile]``."""
    h, w = rows.shape
    for x in range(0, w, tile):
        block = rows[:, x : x + tile]
        if block.shape == (tile, tile):
            yield np.ascontiguousarray(block)
        else:
            padded = np.zeros((tile, tile), dtype=np.uint8)
            padded[:h, : block.shape[1]] = block
            yield padded


class PyramidalMaskWriter:
    """Write a ``[H, W]`` uint8 class-id mask, given as row chunks, to a pyramidal TIFF.

    Args:
        path: output file (written in place; the caller renames it when complete).
        shape: ``(H, W)`` of level 0.
        mpp: microns per pixel of level 0.
        spill_dir: folder for the sub-resolution memory maps (``level<k>.npy``).
        tile: TIFF tile side (multiple of 16).
        compression: tifffile compression name (lossless).
    """

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, int],
        mpp: float,
        spill_dir: str | Path,
        tile: int = 512,
        compression: str = COMPRESSION,
    ) -> None:
        if tile % 16:
            raise TiffWriteError(f"TIFF tile size {tile} must be a multiple of 16")
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.mpp = float(mpp)
        self.tile = int(tile)
        self.compression = compression
        self.spill_dir = Path(spill_dir)
        self.shapes = pyramid_shapes(self.shape, self.tile)
        self.spills: list[_LevelSpill] = []
        self.rows_written = 0

    def _options(self, level: int) -> dict:
        px_per_cm = 1e4 / (self.mpp * 2**level)
        return {
            "dtype": np.uint8,
            "tile": (self.tile, self.tile),
            "compression": self.compression,
            "photometric": "minisblack",
            "resolution": (px_per_cm, px_per_cm),
            "resolutionunit": "CENTIMETER",
            "metadata": None,
            "software": False,
            "subfiletype": 1 if level else 0,
        }

    def _feed_spills(self, rows: np.ndarray, final: bool) -> None:
        for spill in self.spills:
            rows = spill.push(rows, final)

    def _level0_tiles(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Tiles of level 0 in row-major order, pulled from ``chunks`` as they come."""
        h, w = self.shape
        buf: list[np.ndarray] = []
        have = 0
        for chunk in chunks:
            if chunk.ndim != 2 or chunk.shape[1] != w:
                raise TiffWriteError(f"row chunk has shape {list(chunk.shape)}, expected [rows, {w}]")
            if self.rows_written + have + chunk.shape[0] > h:
                raise TiffWriteError(f"row chunks exceed the declared height {h}")
            buf.append(chunk.astype(np.uint8, copy=False))
            have += chunk.shape[0]
            while have >= self.tile or (have and self.rows_written + have == h):
                rows = np.concatenate(buf) if len(buf) > 1 else buf[0]
                n = min(self.tile, have)
                head, rest = rows[:n], rows[n:]
                buf, have = ([rest] if rest.shape[0] else []), rest.shape[0]
                self.rows_written += n
                self._feed_spills(head, final=self.rows_written == h)
                yield from _tiles_of(head, self.tile)
        if self.rows_written + have != h:
            raise TiffWriteError(f"row chunks ended after {self.rows_written + have} of {h} rows")

    def _level_tiles(self, level: int) -> Iterator[np.ndarray]:
        spill = self.spills[level - 1]
        for y in range(0, spill.shape[0], self.tile):
            yield from _tiles_of(spill.read(y, min(y + self.tile, spill.shape[0])), self.tile)

    def write(self, chunks: Iterable[np.ndarray]) -> None:
        """Consume ``[rows, W]`` uint8 chunks (top to bottom, any heights) and write the file."""
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.spills = [_LevelSpill(self.spill_dir / f"level{k}.u8", s) for k, s in enumerate(self.shapes) if k]
        self.rows_written = 0
        n_sub = len(self.shapes) - 1
        try:
            with tifffile.TiffWriter(self.path, bigtiff=True) as tw:
                # levels as top-level pages (not SubIFDs): OpenSlide and QuPath then see the whole pyramid
                tw.write(self._level0_tiles(chunks), shape=self.shape, **self._options(0))
                for level in range(1, n_sub + 1):
                    tw.write(self._level_tiles(level), shape=self.shapes[level], **self._options(level))
        finally:
            for spill in self.spills:
                spill.close()

    def level(self, k: int) -> np.ndarray:
        """Level ``k`` of the written pyramid (``k >= 1`` read back from its spill file)."""
        if k == 0 or not 0 < k <= len(self.spills):
            raise TiffWriteError(f"level {k} is not kept; levels 1..{len(self.spills)} are spilled")
        spill = self.spills[k - 1]
        return spill.read(0, spill.shape[0])
