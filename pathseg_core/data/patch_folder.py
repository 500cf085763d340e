"""Folders of image tiles and label masks, paired by file stem, as a dataset and a datamodule.

Layout::

    root/
      images/   <stem>.jpg|png|tif …   RGB tiles
      masks/    <stem>.png …           label codes, mapped to class ids by a ClassMap

:class:`PatchFolderDataset` serves patches cut from *sources*: single tiles on disk
(:class:`~pathseg_core.data.sources.TileSource`) or in-memory canvases stitched from
overlapping tiles (:class:`~pathseg_core.data.sources.ArraySource`, see
:mod:`pathseg_core.data.mosaic`). :class:`PatchFolderDataModule`
pairs the files, splits them without leaks (:mod:`pathseg_core.data.splits`) and yields
:class:`~pathseg_core.contracts.SegBatch` batches. Datasets know nothing of models: no
normalisation here, only an optional resize for small test models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import Dataset

from pathseg_core.data.augment import Augment
from pathseg_core.data.class_info import ClassInfoMixin
from pathseg_core.data.class_map import ClassMap, load_class_map
from pathseg_core.data.collate import collate_segbatch
from pathseg_core.data.mosaic import MosaicError, crop_regions, stitch_tiles
from pathseg_core.data.sampling import (
    PatchSizeError,
    SplitLoadersMixin,
    grid_windows,
    random_window,
    sample_generator,
)
from pathseg_core.data.sources import (
    ArraySource,
    Source,
    TilePair,
    TileSource,
    pair_files,
    resolve_root,
    stem_list,
)
from pathseg_core.data.splits import (
    SplitError,
    check_no_leak,
    check_spatial_gap,
    group_key,
    read_split_file,
    spatial_split,
    split_by_group,
    tile_boxes,
)
from pathseg_core.data.tile_io import image_shape


# ---------------------------------------------------------------------- dataset
class PatchFolderDataset(Dataset):
    """Patches (or whole regions) of image sources with class-id labels.

    Items are keyed by ``index`` or ``(epoch, index)`` (see
    :class:`~pathseg_core.data.sampling.EpochSampler`). A sample is a dict:

    * ``"image"`` ``[3, H, W]`` uint8 RGB (0..255);
    * ``"labels"`` ``[H, W]`` long class ids (``ignore_index`` for skipped pixels), absent
      for sources without masks; ``"ignore_index"`` int;
    * ``"source_id"`` str; ``"x"``, ``"y"`` top-left of the patch in the source's pixels;
      ``"level"`` 0; ``"mpp"`` float or ``None``.

    Args:
        sources: where patches come from.
        class_map: maps mask codes to class ids.
        patch_size: side of square patches; ``None`` serves each source region whole.
        sampling: ``"grid"`` tiles each region (deterministic, for evaluation);
            ``"random"`` draws ``patches_per_source`` windows per source and epoch from a
            generator keyed on ``(seed, epoch, index)``.
        stride: grid step (default ``patch_size``).
        patches_per_source: random windows per source per epoch.
        image_size: resize patches to ``image_size`` × ``image_size`` (image bilinear with
            antialias, labels nearest) — for small test models; ``None`` keeps the size.
        augment: seeded augmentation (``None``: none).
        seed: base seed for crops and augmentation.
        mpp: microns per pixel of the sources, reported in the metadata.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        class_map: ClassMap,
        patch_size: int | None = None,
        sampling: Literal["grid", "random"] = "grid",
        stride: int | None = None,
        patches_per_source: int = 8,
        image_size: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        mpp: float | None = None,
    ) -> None:
        if sampling not in ("grid", "random"):
            raise ValueError(f"sampling must be 'grid' or 'random', got {sampling!r}")
        if sampling == "random" and patch_size is None:
            raise PatchSizeError('patch_sampling="random" needs a patch_size')
        self.sources = list(sources)
        self.class_map = class_map
        self.patch_size = patch_size
        self.sampling = sampling
        self.patches_per_source = patches_per_source
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.mpp = mpp
        self.windows: list[tuple[int, int, int]] = []  # (source index, x, y) for grid sampling
        if sampling == "grid":
            for i, src in enumerate(self.sources):
                if patch_size is None:
                    self.windows.append((i, src.region.x0, src.region.y0))
                else:
                    self.windows.extend((i, x, y) for x, y in grid_windows(src.region, patch_size, stride))

    def __len__(self) -> int:
        if self.sampling == "random":
            return len(self.sources) * self.patches_per_source
        return len(self.windows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        if self.sampling == "random":
            src = self.sources[index % len(self.sources)]
            x, y = random_window(src.region, self.patch_size, sample_generator(self.seed, epoch, index))  # type: ignore[arg-type]
        else:
            i, x, y = self.windows[index]
            src = self.sources[i]
        w, h = (src.region.width, src.region.height) if self.patch_size is None else (self.patch_size,) * 2
        rgb, codes, mask_name = src.read(x, y, w, h, allow_color=self.class_map.threshold is not None)
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()  # copy: PIL arrays are read-only
        labels = None if codes is None else torch.from_numpy(self.class_map.apply(codes, name=mask_name))
        if self.image_size is not None:
            image, labels = _resize(image, labels, self.image_size)
        if self.augment is not None:
            image, labels = self.augment(image, labels, sample_generator(self.seed, epoch, index, stream=2))
        sample: dict[str, object] = {
            "image": image,
            "ignore_index": self.class_map.ignore_index,
            "source_id": src.source_id,
            "x": int(x),
            "y": int(y),
            "level": 0,
            "mpp": self.mpp,
        }
        if labels is not None:
            sample["labels"] = labels
        return sample


def _resize(image: torch.Tensor, labels: torch.Tensor | None, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[3, H, W]`` uint8 → ``[3, size, size]`` uint8 (bilinear, antialias); labels nearest."""
    if tuple(image.shape[-2:]) == (size, size):
        return image, labels
    resized = F.interpolate(
        image[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    image = resized[0].round().clamp(0, 255).to(torch.uint8)
    if labels is not None:
        labels = F.interpolate(labels[None, None].float(), size=(size, size), mode="nearest-exact")[0, 0].long()
    return image, labels


# ---------------------------------------------------------------------- datamodule
SPLITS = ("train", "val", "test")


class PatchFolderDataModule(SplitLoadersMixin, ClassInfoMixin, pl.LightningDataModule):
    r"""Image/mask folders → leak-free train / val / test splits → :class:`SegBatch` batches.

    Args:
        root: the data folder. Used as given if it exists; otherwise a relative path is
            looked up under :func:`~pathseg_core.data.paths.data_root` (e.g. ``"seg/ocdc"``).
        class_map: path of a class-map JSON, or the name of a shipped one
            (``"ocdc_binary"``, ``"bcss_5class"``).
        images_dir: sub-folder of ``root`` with the RGB tiles.
        masks_dir: sub-folder with the label masks (same stems); ``None`` for unlabelled data.
        image_glob: glob selecting image files in ``images_dir``.
        mask_glob: glob selecting mask files in ``masks_dir``.
        split: ``"group"`` — whole groups (``group_pattern``) go to one split, at random
            (``seed``); ``"spatial"`` — within each group, tiles (``position_pattern``) or
            mosaic canvases are cut into bands along ``spatial_axis`` with a guard of
            ``spatial_gap`` pixels between splits; ``"files"`` — stems listed in ``split_files``.
        group_pattern: regex with one group: the slide / region key of a stem (default:
            everything before the first ``_``).
        position_pattern: regex with named groups ``row``/``col`` (grid cells of one tile)
            or ``x``/``y`` (pixels) placing a tile, for ``split="spatial"`` without mosaics
            (tiles of one group are taken to share the first tile's size).
        spatial_axis: axis of the bands; ``"auto"`` takes the canvas' longer side for
            mosaics, the axis with more distinct tile positions otherwise.
        spatial_gap: pixels that must separate any training pixel from any held-out pixel.
        split_files: split name → file listing one stem per line (relative to ``root``
            unless absolute), for ``split="files"``.
        val_fraction: share of the data held out for validation.
        test_fraction: share held out for testing (0: no test split).
        mosaic_pattern: regex giving a tile's x offset (one group) or named ``x``/``y``
            groups: tiles of one group are stitched into one canvas before splitting
            (overlapping tiles, e.g. BCSS ``r"-(\\d+)$"``).
        patch_size: side of square patches cut from tiles / regions; ``None`` serves whole tiles.
        patch_sampling: training patches on a ``"grid"`` or ``"random"`` (seeded, new
            each epoch); evaluation always uses the grid.
        patch_stride: grid step (default ``patch_size``).
        patches_per_source: random training patches per tile / region per epoch.
        image_size: resize every patch to this square side (small test models); ``None`` keeps it.
        batch_size: samples per batch.
        num_workers: data-loading worker processes.
        persistent_workers: keep workers alive between epochs (random crops still change
            per epoch: the epoch travels in the sampler's keys).
        seed: seeds splits, random patches, shuffling and augmentation.
        augment: seeded flips, 90° rotations and colour jitter on training patches.
        color_jitter: strength of brightness / contrast / saturation jitter when augmenting.
        mpp: microns per pixel of the images, reported in batch metadata.
    """

    def __init__(
        self,
        root: str,
        class_map: str,
        images_dir: str = "images",
        masks_dir: str | None = "masks",
        image_glob: str = "*",
        mask_glob: str = "*",
        split: Literal["group", "spatial", "files"] = "group",
        group_pattern: str = r"^(.+?)_",
        position_pattern: str = r"r(?P<row>\d+)c(?P<col>\d+)",
        spatial_axis: Literal["auto", "x", "y"] = "auto",
        spatial_gap: int = 64,
        split_files: dict[str, str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        mosaic_pattern: str | None = None,
        patch_size: int | None = None,
        patch_sampling: Literal["grid", "random"] = "grid",
        patch_stride: int | None = None,
        patches_per_source: int = 8,
        image_size: int | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        persistent_workers: bool = False,
        seed: int = 0,
        augment: bool = False,
        color_jitter: float = 0.1,
        mpp: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise SplitError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be in [0, 1)")
        self.class_map = load_class_map(class_map)
        self.dropped: list[str] = []  # stems left out as guard band by a spatial split
        self._sources: dict[str, list[Source]] | None = None
        self.datasets: dict[str, PatchFolderDataset] = {}

    # -------------------------------------------------------------- splits
    @property
    def fractions(self) -> dict[str, float]:
        """Share of the data per split, in band order (train, val, test)."""
        hp = self.hparams
        return {"train": 1.0 - hp.val_fraction - hp.test_fraction, "val": hp.val_fraction, "test": hp.test_fraction}

    def split_sources(self) -> dict[str, list[Source]]:
        """Pair the files and split them (once; cached): split name → sources."""
        if self._sources is None:
            hp = self.hparams
            root = resolve_root(hp.root)
            pairs = pair_files(
                root / hp.images_dir, None if hp.masks_dir is None else root / hp.masks_dir, hp.image_glob, hp.mask_glob
            )
            self._sources = self._split_mosaics(pairs) if hp.mosaic_pattern else self._split_tiles(pairs, root)
        return self._sources

    def _split_tiles(self, pairs: list[TilePair], root: Path) -> dict[str, list[Source]]:
        hp = self.hparams
        stems = [p.stem for p in pairs]
        if hp.split == "group":
            splits = split_by_group(stems, hp.group_pattern, self.fractions, hp.seed)
            check_no_leak(splits, hp.group_pattern)
        elif hp.split == "spatial":
            splits = self._spatial_tile_split(pairs)
        elif hp.split == "files":
            splits = self._file_split(stems, root)
        else:
            raise SplitError(f"split must be 'group', 'spatial' or 'files', got {hp.split!r}")
        by_stem = {p.stem: p for p in pairs}
        return {name: [TileSource.from_pair(by_stem[s]) for s in splits.get(name, [])] for name in SPLITS}

    def _spatial_tile_split(self, pairs: list[TilePair]) -> dict[str, list[str]]:
        hp = self.hparams
        groups: dict[str, list[TilePair]] = {}
        for pair in pairs:
            groups.setdefault(group_key(pair.stem, hp.group_pattern), []).append(pair)
        out: dict[str, list[str]] = {name: [] for name in SPLITS}
        for members in groups.values():
            boxes = tile_boxes([p.stem for p in members], hp.position_pattern, image_shape(members[0].image))
            axis = hp.spatial_axis
            if axis == "auto":
                axis = "x" if len({b.x for b in boxes}) > len({b.y for b in boxes}) else "y"
            result = spatial_split(boxes, self.fractions, axis=axis, gap=hp.spatial_gap)
            check_spatial_gap(boxes, result.splits, hp.spatial_gap)
            self.dropped.extend(result.dropped)
            for name in SPLITS:
                out[name].extend(result.splits[name])
        return out

    def _file_split(self, stems: list[str], root: Path) -> dict[str, list[str]]:
        hp = self.hparams
        if not hp.split_files:
            raise SplitError('split="files" needs split_files, e.g. {"train": "train.txt", "val": "val.txt"}')
        unknown_names = sorted(set(hp.split_files) - set(SPLITS))
        if unknown_names:
            raise SplitError(f"split_files has unknown splits {unknown_names}; use {list(SPLITS)}")
        splits = {}
        for name, path in hp.split_files.items():
            path = Path(path) if Path(path).is_absolute() else root / path
            listed = read_split_file(path)
            unknown = sorted(set(listed) - set(stems))
            if unknown:
                raise SplitError(
                    f"split file {path} lists {len(unknown)} stem(s) not found in the folders: {stem_list(unknown)}"
                )
            splits[name] = listed
        check_no_leak(splits)
        return splits

    def _split_mosaics(self, pairs: list[TilePair]) -> dict[str, list[Source]]:
        hp = self.hparams
        if hp.split == "files":
            raise SplitError('split="files" cannot be combined with mosaic_pattern; use "group" or "spatial"')
        groups: dict[str, list[TilePair]] = {}
        for pair in pairs:
            groups.setdefault(group_key(pair.stem, hp.group_pattern), []).append(pair)
        mosaics = {
            key: stitch_tiles(
                [p.image for p in members],
                None if members[0].mask is None else [p.mask for p in members],
                hp.mosaic_pattern,
                source_id=key,
            )
            for key, members in groups.items()
        }
        out: dict[str, list[Source]] = {name: [] for name in SPLITS}
        if hp.split == "group":
            splits = split_by_group(list(mosaics), r"^(.*)$", self.fractions, hp.seed)
            for name in SPLITS:
                out[name] = [ArraySource.from_mosaic(mosaics[key]) for key in splits[name]]
            return out
        if hp.split != "spatial":
            raise SplitError(f"split must be 'group', 'spatial' or 'files', got {hp.split!r}")
        for mosaic in mosaics.values():
            height, width = mosaic.size
            axis = hp.spatial_axis if hp.spatial_axis != "auto" else ("x" if width >= height else "y")
            regions = crop_regions(width, height, self.fractions, hp.spatial_gap, axis=axis)
            for name, region in regions.items():
                if hp.patch_size is not None and min(region.width, region.height) < hp.patch_size:
                    raise MosaicError(
                        f"the {name} region of mosaic {mosaic.source_id!r} is {region.width}x{region.height} px, "
                        f"smaller than patch_size {hp.patch_size}; lower patch_size or change the fractions"
                    )
                out[name].append(ArraySource.from_mosaic(mosaic, region))
        return out

    # -------------------------------------------------------------- datasets
    def _dataset(self, name: str) -> PatchFolderDataset:
        hp = self.hparams
        train = name == "train"
        augment = None
        if train and hp.augment:
            augment = Augment(brightness=hp.color_jitter, contrast=hp.color_jitter, saturation=hp.color_jitter)
        return PatchFolderDataset(
            self.split_sources()[name],
            self.class_map,
            patch_size=hp.patch_size,
            sampling=hp.patch_sampling if train else "grid",
            stride=hp.patch_stride,
            patches_per_source=hp.patches_per_source,
            image_size=hp.image_size,
            augment=augment,
            seed=hp.seed,
            mpp=hp.mpp,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (``fit``, ``validate``, ``test``, ``predict``; ``None``: all)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        names = wanted.get(stage or "", ("train", "val", "test", "predict"))
        for name in names:
            if name == "predict":
                self.datasets[name] = self._dataset("test" if self.split_sources()["test"] else "val")
            else:
                self.datasets[name] = self._dataset(name)

    collate_fn = staticmethod(collate_segbatch)

    def persistent_workers(self) -> bool:
        """The ``persistent_workers`` setting."""
        return self.hparams.persistent_workers

    def empty_split_message(self, name: str) -> str:
        """Empty test / predict split: how to get one."""
        return f"the {name} split is empty; set test_fraction > 0 or give split_files['test']"
