"""Where patches are cut and in which order, reproducibly across epochs and workers.

Randomness is keyed, never global: :func:`sample_generator` derives a ``torch.Generator``
from ``(seed, epoch, index)``, so a sample is the same whichever worker loads it, and
:class:`EpochSampler` hands the epoch to the dataset by yielding ``(epoch, index)`` keys
(Lightning calls its ``set_epoch`` at the start of every epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pathseg_core.data.mosaic import Region
from pathseg_core.data.splits import SplitError


class PatchSizeError(ValueError):
    """A patch does not fit the region it is drawn from."""


def sample_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch, index, stream)``, all non-negative.

    The numbers are mixed through ``numpy.random.SeedSequence``, so neighbouring keys give
    unrelated streams; ``stream`` separates independent uses of one key (crop, shuffle).
    """
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def grid_windows(region: Region, patch_size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left ``(x, y)`` of ``patch_size`` windows tiling ``region`` row by row.

    Windows step by ``stride`` (default ``patch_size``: no overlap); the last row and
    column are shifted back to end flush with the region, so every pixel is covered and
    no window leaves it.

    Raises:
        PatchSizeError: the region is smaller than one patch.
    """
    stride = stride or patch_size
    if region.width < patch_size or region.height < patch_size:
        raise PatchSizeError(
            f"patch_size {patch_size} does not fit a {region.width}x{region.height} region; lower patch_size"
        )
    if stride < 1:
        raise PatchSizeError(f"patch stride must be >= 1, got {stride}")

    def starts(lo: int, hi: int) -> list[int]:
        last = hi - patch_size
        out = list(range(lo, last + 1, stride))
        if out[-1] != last:
            out.append(last)
        return out

    return [(x, y) for y in starts(region.y0, region.y1) for x in starts(region.x0, region.x1)]


def random_window(region: Region, patch_size: int, generator: torch.Generator) -> tuple[int, int]:
    """Uniformly random top-left ``(x, y)`` of a ``patch_size`` window inside ``region``."""
    if region.width < patch_size or region.height < patch_size:
        raise PatchSizeError(
            f"patch_size {patch_size} does not fit a {region.width}x{region.height} region; lower patch_size"
        )
    x = region.x0 + int(torch.randint(region.width - patch_size + 1, (1,), generator=generator))
    y = region.y0 + int(torch.randint(region.height - patch_size + 1, (1,), generator=generator))
    return x, y


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys, so the dataset can vary random crops per epoch.

    A :class:`~torch.utils.data.DistributedSampler` (one replica unless
    ``torch.distributed`` is initialised), so Lightning keeps it under DDP instead of
    wrapping it, and calls :meth:`set_epoch` before every epoch. With ``shuffle`` the order
    for epoch ``e`` is a permutation seeded with ``seed + e``; every rank sees its own
    shard, padded to equal length as ``DistributedSampler`` does.
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas if num_replicas is not None else (dist.get_world_size() if distributed else 1),
            rank=rank if rank is not None else (dist.get_rank() if distributed else 0),
            shuffle=shuffle,
            seed=seed,
        )

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, int(i)) for i in super().__iter__())


def split_loader(
    dataset: Dataset,
    *,
    train: bool,
    batch_size: int,
    num_workers: int,
    collate_fn: Callable,
    seed: int,
    persistent_workers: bool = False,
) -> DataLoader:
    """The DataLoader every datamodule uses: seeded :class:`EpochSampler` for training, ordered otherwise."""
    common = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_fn,
        "persistent_workers": persistent_workers and num_workers > 0,
    }
    if train:
        return DataLoader(dataset, sampler=EpochSampler(dataset, shuffle=True, seed=seed), **common)
    return DataLoader(dataset, shuffle=False, **common)


class SplitLoadersMixin:
    """``train/val/test/predict_dataloader`` of a datamodule whose ``setup`` fills ``self.datasets``.

    The datamodule's ``hparams`` must hold ``batch_size``, ``num_workers`` and ``seed``.
    Subclasses set :attr:`collate_fn`, and may set :attr:`predict_split` and override
    :meth:`persistent_workers` / :meth:`empty_split_message`.
    """

    #: Batch collation (a ``staticmethod`` in the subclass).
    collate_fn: Callable
    #: Split the predict loader serves.
    predict_split = "predict"
    datasets: dict[str, Dataset]

    def persistent_workers(self) -> bool:
        """Keep DataLoader workers alive between epochs (only with ``num_workers > 0``)."""
        return False

    def empty_split_message(self, name: str) -> str:
        """The one-line error when the ``test`` / ``predict`` split is empty, saying what to do."""
        return f"the {name} split is empty; set {name}_fraction > 0"

    def _loader(self, name: str) -> DataLoader:
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(name, name))  # type: ignore[attr-defined]
        dataset = self.datasets[name]
        if name in ("test", "predict") and len(dataset) == 0:  # type: ignore[arg-type]
            raise SplitError(self.empty_split_message(name))
        hp = self.hparams  # type: ignore[attr-defined]
        return split_loader(
            dataset,
            train=name == "train",
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            collate_fn=self.collate_fn,
            seed=hp.seed,
            persistent_workers=self.persistent_workers(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; random patches change every epoch."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches on the grid of the validation split (empty without one)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches on the grid of the test split."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches of :attr:`predict_split`."""
        return self._loader(self.predict_split)
