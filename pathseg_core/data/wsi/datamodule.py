"""``WSIPatchDataModule``: train on whole slides with GeoJSON or label-mask annotations.

Splits are by slide (never by patch): give ``val_slides`` / ``test_slides`` (members of
``slides`` by path or file stem), or fractions drawn with ``seed``. Batches are
:class:`~pathseg_core.contracts.SegBatch`; with ``sampling="concentric"`` they carry
``context`` images and ``context_targets``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch

from pathseg_core.contracts import SegBatch, Targets
from pathseg_core.data.augment import Augment
from pathseg_core.data.class_info import ClassInfoMixin
from pathseg_core.data.class_map import load_class_map
from pathseg_core.data.collate import collate_segbatch
from pathseg_core.data.sampling import SplitLoadersMixin
from pathseg_core.data.splits import SplitError, proportional_counts
from pathseg_core.data.wsi.dataset import SlideSource, WSIPatchDataset
from pathseg_core.data.wsi.labels import GEOJSON_SUFFIXES, open_labels, read_code_names
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tissue import TissueParams, detect_tissue

_SPLITS = ("train", "val", "test")


def collate_wsi(samples: Sequence[Mapping[str, object]]) -> SegBatch:
    """:func:`collate_segbatch`, plus ``context`` ``[B, 3, H, W]`` float and ``context_targets`` when present."""
    batch = collate_segbatch(samples)
    if "context" not in samples[0]:
        return batch
    context = torch.stack([torch.as_tensor(s["context"]) for s in samples]).float()
    semantic = torch.stack([torch.as_tensor(s["context_labels"]) for s in samples]).long()
    ignore = batch.targets.ignore_index if batch.targets is not None else int(samples[0]["ignore_index"])  # type: ignore[call-overload]
    return replace(batch, context=context, context_targets=Targets(semantic=semantic, ignore_index=ignore))


def split_slides(
    slides: Sequence[str],
    *,
    val_slides: Sequence[str] | None,
    test_slides: Sequence[str] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, list[int]]:
    """Indices of ``slides`` per split: named members (path or stem), else seeded fractions.

    Raises:
        SplitError: a named slide is not in ``slides``, a slide is named for two splits, or
            there are fewer slides than splits with a positive share.
    """
    keys = {}
    for i, s in enumerate(slides):
        keys[s] = i
        keys.setdefault(Path(s).stem, i)
    if val_slides is not None or test_slides is not None:
        chosen: dict[str, list[int]] = {}
        for name, given in (("val", val_slides), ("test", test_slides)):
            missing = [s for s in (given or []) if s not in keys]
            if missing:
                raise SplitError(f"{name}_slides {missing} are not among slides; name them by path or file stem")
            chosen[name] = sorted({keys[s] for s in given or []})
        if set(chosen["val"]) & set(chosen["test"]):
            raise SplitError("a slide is in both val_slides and test_slides; a slide belongs to one split")
        held = set(chosen["val"]) | set(chosen["test"])
        chosen["train"] = [i for i in range(len(slides)) if i not in held]
        return chosen
    shares = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    # Every split with a positive share gets at least one slide (SplitError if too few slides).
    counts = proportional_counts(len(slides), {k: f for k, f in shares.items() if f > 0})
    order = np.random.default_rng(seed).permutation(len(slides)).tolist()
    out, start = {}, 0
    for name in _SPLITS:
        out[name] = sorted(order[start : start + counts.get(name, 0)])
        start += counts.get(name, 0)
    return out


class WSIPatchDataModule(SplitLoadersMixin, ClassInfoMixin, pl.LightningDataModule):
    """Slides + annotations → slide-level splits → :class:`SegBatch` batches of patches.

    Args:
        slides: slide files (any format :class:`SlideReader` opens).
        annotations: one annotation per slide, same order: QuPath GeoJSON (``.geojson`` /
            ``.json``) or a label mask aligned to level 0 (PNG / TIFF). Default: the
            sibling ``<stem>.geojson`` of each slide.
        class_map: class-map JSON path or shipped name (``"bcss_5class"``).
        code_names: JSON ``{code: name}`` naming GeoJSON classes by source code (then mapped
            by ``class_map``); ``None``: GeoJSON names are the class map's names.
        unannotated: label of pixels no GeoJSON polygon covers (a source code with
            ``code_names``, else a class id); ``None``: ignored.
        mask_downsample: level-0 pixels per label-mask pixel.
        sampling: ``"grid"``, ``"random"`` or ``"concentric"`` (training; evaluation
            uses the grid, with concentric context for ``"concentric"``).
        mpp: target µm/px of patches (``None``: level 0).
        slide_mpp: µm per level-0 pixel for slides whose metadata has none.
        patch_size: patch side in output pixels.
        stride: grid step in output pixels (default ``patch_size``).
        context_factor: context field of view / patch field of view (concentric).
        samples_per_slide: random training patches per slide per epoch.
        min_tissue: smallest tissue fraction of a patch.
        tissue_mpp: resolution of the tissue mask (µm/px).
        val_slides: slides (path or stem) for validation; with ``test_slides`` overrides fractions.
        test_slides: slides for testing.
        val_fraction: share of slides for validation when none are named.
        test_fraction: share of slides for testing when none are named.
        batch_size: samples per batch.
        num_workers: loader worker processes (each opens its own slide handles).
        seed: seeds the split, random patches, shuffling and augmentation.
        augment: seeded flips, 90° rotations and colour jitter on training patches.
        color_jitter: strength of the colour jitter.
        cache_dir: tissue-mask cache (default ``$PATHSEG_CACHE/tissue``).
    """

    def __init__(
        self,
        slides: list[str],
        class_map: str,
        annotations: list[str] | None = None,
        code_names: str | None = None,
        unannotated: int | None = None,
        mask_downsample: float = 1.0,
        sampling: Literal["grid", "random", "concentric"] = "random",
        mpp: float | None = 0.5,
        slide_mpp: float | None = None,
        patch_size: int = 1024,
        stride: int | None = None,
        context_factor: float = 2.0,
        samples_per_slide: int = 16,
        min_tissue: float = 0.5,
        tissue_mpp: float = 8.0,
        val_slides: list[str] | None = None,
        test_slides: list[str] | None = None,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = False,
        color_jitter: float = 0.1,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not slides:
            raise SplitError("slides is empty; give at least one slide")
        if annotations is not None and len(annotations) != len(slides):
            raise SplitError(
                f"got {len(annotations)} annotations for {len(slides)} slides; give one per slide, same order"
            )
        if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise SplitError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be in [0, 1)")
        self.class_map = load_class_map(class_map)
        self.split_index = split_slides(
            slides,
            val_slides=val_slides,
            test_slides=test_slides,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        self._sources: dict[int, SlideSource] = {}
        self.datasets: dict[str, WSIPatchDataset] = {}

    # -------------------------------------------------------------- sources
    def annotation_path(self, i: int) -> Path:
        """The annotation file of slide ``i`` (given, or the sibling ``<stem>.geojson``)."""
        hp = self.hparams
        if hp.annotations is not None:
            return Path(hp.annotations[i])
        return Path(hp.slides[i]).with_suffix(GEOJSON_SUFFIXES[0])

    def source(self, i: int) -> SlideSource:
        """Slide ``i`` opened with its labels and tissue mask (built once, cached)."""
        if i not in self._sources:
            hp = self.hparams
            reader = SlideReader(hp.slides[i], mpp=hp.slide_mpp)
            if hp.mpp is not None:
                reader.require_mpp()  # fail here, naming the slide and --slide_mpp
            labels = open_labels(
                self.annotation_path(i),
                self.class_map,
                slide_size=reader.dimensions,
                code_names=None if hp.code_names is None else read_code_names(hp.code_names),
                unannotated=hp.unannotated,
                mask_downsample=hp.mask_downsample,
            )
            tissue = detect_tissue(reader, TissueParams(mpp=hp.tissue_mpp), cache_dir=hp.cache_dir)
            self._sources[i] = SlideSource(reader, labels, tissue)
        return self._sources[i]

    def _dataset(self, name: str) -> WSIPatchDataset:
        hp = self.hparams
        train = name == "train"
        augment = None
        if train and hp.augment:
            augment = Augment(brightness=hp.color_jitter, contrast=hp.color_jitter, saturation=hp.color_jitter)
        sampling = hp.sampling if train else ("concentric" if hp.sampling == "concentric" else "grid")
        return WSIPatchDataset(
            [self.source(i) for i in self.split_index[name]],
            sampling=sampling,
            patch_size=hp.patch_size,
            mpp=hp.mpp,
            stride=hp.stride,
            context_factor=hp.context_factor,
            samples_per_slide=hp.samples_per_slide,
            min_tissue=hp.min_tissue,
            random_centres=train,
            ignore_index=self.ignore_index,
            augment=augment,
            seed=hp.seed,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (``fit``, ``validate``, ``test``, ``predict``; ``None``: all)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for name in wanted.get(stage or "", _SPLITS):
            if name not in self.datasets:
                self.datasets[name] = self._dataset(name)

    collate_fn = staticmethod(collate_wsi)
    predict_split = "test"

    def persistent_workers(self) -> bool:
        """Always (with workers): slide handles are opened once per worker, not per epoch."""
        return True

    def empty_split_message(self, name: str) -> str:
        """Empty test split: how to get one."""
        return f"the {name} split has no patches; name {name}_slides or set {name}_fraction > 0"
