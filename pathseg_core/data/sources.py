"""Image / mask files paired by stem, and the *sources* patches are cut from.

A source is one image (with its label mask, if any) and the :class:`Region` of it that
may be used: a tile on disk (:class:`TileSource`, decoded on demand) or an in-memory
canvas such as a stitched mosaic (:class:`ArraySource`). Arrays are ``[H, W, 3]`` RGB
and ``[H, W]`` label codes (rows, columns); windows are given by their top-left ``x, y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pathseg_core.data.mosaic import Mosaic, Region
from pathseg_core.data.paths import data_root
from pathseg_core.data.tile_io import IMAGE_SUFFIXES, image_shape, read_label_mask, read_rgb

#: How many stems an error message lists before "…".
_SHOW = 5


class DataFolderError(FileNotFoundError):
    """A data folder is missing or holds no usable images."""


class PairingError(ValueError):
    """Images and masks do not pair up one-to-one by stem."""


def stem_list(stems: Sequence[str]) -> str:
    """The first few stems, sorted and comma-separated, for error messages."""
    head = ", ".join(sorted(stems)[:_SHOW])
    return head + (f", … ({len(stems)} in all)" if len(stems) > _SHOW else "")


# ---------------------------------------------------------------------- files
@dataclass(frozen=True)
class TilePair:
    """One image file and its mask file (``None`` for unlabelled data)."""

    stem: str
    image: Path
    mask: Path | None


def _scan(folder: Path, glob: str, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataFolderError(f"{what} folder {folder} does not exist; check root and {what}_dir")
    files = sorted(p for p in folder.glob(glob) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataFolderError(f"{what} folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files matching {glob!r}")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise PairingError(
                f"{what} folder {folder} has two files for stem {path.stem!r}: {by_stem[path.stem].name}, {path.name}"
            )
        by_stem[path.stem] = path
    return by_stem


def pair_files(
    images_dir: str | Path,
    masks_dir: str | Path | None,
    image_glob: str = "*",
    mask_glob: str = "*",
) -> list[TilePair]:
    """Pair ``images_dir/<stem>.*`` with ``masks_dir/<stem>.*``, sorted by stem.

    Raises:
        DataFolderError: a folder is missing or empty.
        PairingError: an image lacks a mask or a mask lacks an image (the first few stems
            are named), or one folder holds two files with the same stem.
    """
    images = _scan(Path(images_dir), image_glob, "images")
    if masks_dir is None:
        return [TilePair(stem, path, None) for stem, path in images.items()]
    masks = _scan(Path(masks_dir), mask_glob, "masks")
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise PairingError(f"{len(no_mask)} image(s) in {images_dir} have no mask in {masks_dir}: {stem_list(no_mask)}")
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise PairingError(
            f"{len(no_image)} mask(s) in {masks_dir} have no image in {images_dir}: {stem_list(no_image)}"
        )
    return [TilePair(stem, images[stem], masks[stem]) for stem in sorted(images)]


def resolve_root(root: str | Path) -> Path:
    """``root`` as given if it exists, else ``data_root() / root`` for relative paths.

    Raises:
        DataFolderError: neither exists.
    """
    path = Path(root).expanduser()
    if path.is_dir():
        return path
    if not path.is_absolute() and (data_root() / path).is_dir():
        return data_root() / path
    raise DataFolderError(f"data folder {root!r} not found as given nor under data_root() = {data_root()}")


# ---------------------------------------------------------------------- sources
@lru_cache(maxsize=4)
def _read_tile(image_path: Path, mask_path: Path | None, allow_color: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a tile and its mask (``[H, W, 3]`` uint8, ``[H, W]`` codes), read-only, cached."""
    image = read_rgb(image_path)
    mask = None if mask_path is None else read_label_mask(mask_path, allow_color=allow_color)
    if mask is not None and mask.shape != image.shape[:2]:
        raise PairingError(
            f"mask {mask_path} is {list(mask.shape)} but its image {image_path} is {list(image.shape[:2])}"
        )
    image.flags.writeable = False
    if mask is not None:
        mask.flags.writeable = False
    return image, mask


@dataclass(frozen=True)
class TileSource:
    """One tile on disk, read on demand; ``region`` limits where patches are cut.

    Attributes:
        source_id: the tile's stem.
        image: path of the RGB tile.
        mask: path of its label mask, or ``None``.
        region: the part of the tile to use (pixels), the whole tile by default.
    """

    source_id: str
    image: Path
    mask: Path | None
    region: Region

    @classmethod
    def from_pair(cls, pair: TilePair) -> TileSource:
        """Whole-tile source; reads only the image header for its size."""
        height, width = image_shape(pair.image)
        return cls(pair.stem, pair.image, pair.mask, Region(0, 0, width, height))

    def read(self, x: int, y: int, w: int, h: int, allow_color: bool) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Window ``[y:y+h, x:x+w]``: RGB ``[h, w, 3]``, raw codes ``[h, w]`` or ``None``, mask name.

        The last few decoded tiles are cached per process, so grid patches of one tile
        (served in order for evaluation) decode it once. The arrays are read-only.
        """
        image, mask = _read_tile(self.image, self.mask, allow_color)
        crop = (slice(y, y + h), slice(x, x + w))
        return image[crop], None if mask is None else mask[crop], str(self.mask)


@dataclass(frozen=True)
class ArraySource:
    """An in-memory canvas (e.g. a stitched :class:`~pathseg_core.data.mosaic.Mosaic`) and a region of it."""

    source_id: str
    image: np.ndarray
    mask: np.ndarray | None
    region: Region

    @classmethod
    def from_mosaic(cls, mosaic: Mosaic, region: Region | None = None) -> ArraySource:
        """Source over ``region`` of ``mosaic`` (the whole canvas by default)."""
        h, w = mosaic.size
        return cls(mosaic.source_id, mosaic.image, mosaic.mask, region or Region(0, 0, w, h))

    def read(self, x: int, y: int, w: int, h: int, allow_color: bool) -> tuple[np.ndarray, np.ndarray | None, str]:  # noqa: ARG002
        """Window ``[y:y+h, x:x+w]``: RGB ``[h, w, 3]``, raw codes ``[h, w]`` or ``None``, mask name."""
        crop = (slice(y, y + h), slice(x, x + w))
        return self.image[crop], None if self.mask is None else self.mask[crop], f"mosaic {self.source_id}"


Source = TileSource | ArraySource
