import numpy as np
import pytest
import torch
from PIL import Image

import pathseg_core  # noqa: F401 - arms the torchvision fix before lightning is imported

# isort: split
import lightning.pytorch as pl

from pathseg_core.contracts import SegBatch
from pathseg_core.data.augment import Augment
from pathseg_core.data.class_map import ClassMap, ClassMapError, load_class_map
from pathseg_core.data.collate import CollateError, collate_segbatch
from pathseg_core.data.patch_folder import PatchFolderDataModule, PatchFolderDataset
from pathseg_core.data.paths import data_root
from pathseg_core.data.sources import (
    DataFolderError,
    PairingError,
    TileSource,
    pair_files,
    resolve_root,
)
from pathseg_core.data.splits import SplitError, SplitLeakError, check_spatial_gap, tile_boxes
from pathseg_core.data.tile_io import read_label_mask

OCDC = data_root() / "seg" / "ocdc"
BCSS = data_root() / "seg" / "bcss"
BCSS_RAW_TO_ID = {1: 1, 2: 2, 3: 3, 7: 255, 15: 255}


def ocdc(**kwargs) -> PatchFolderDataModule:
    args = {"masks_dir": "masks_bin_png", "split": "spatial", "val_fraction": 0.2, "test_fraction": 0.2}
    return PatchFolderDataModule("seg/ocdc", "ocdc_binary", **{**args, **kwargs})


def bcss(**kwargs) -> PatchFolderDataModule:
    args = {
        "split": "spatial",
        "mosaic_pattern": r"-(\d+)$",
        "group_pattern": r"^(.*)_MPP",
        "patch_size": 256,
        "val_fraction": 0.2,
        "spatial_gap": 64,
    }
    return PatchFolderDataModule("seg/bcss", "bcss_5class", **{**args, **kwargs})


def make_folder(tmp_path, images=("a", "b"), masks=("a", "b"), mask_values=(0, 255)):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    for stem in images:
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    for stem in masks:
        m = np.zeros((8, 8), np.uint8)
        m[: len(mask_values)] = np.array(mask_values, np.uint8)[:, None]
        Image.fromarray(m).save(tmp_path / "masks" / f"{stem}.png")
    return tmp_path


# ---------------------------------------------------------------------- OCDC
def test_ocdc_root_resolution_and_class_info():
    assert resolve_root("seg/ocdc") == data_root() / "seg" / "ocdc"
    assert resolve_root(str(OCDC)) == OCDC
    dm = ocdc()
    assert dm.num_classes == 2 and dm.class_names == ["background", "tumor"]
    assert dm.class_colors == [(0, 0, 0), (255, 0, 0)] and dm.ignore_index == 255


def test_ocdc_spatial_split_is_disjoint_with_guard():
    dm = ocdc()
    sources = dm.split_sources()
    splits = {k: [s.source_id for s in v] for k, v in sources.items()}
    stems = sorted(sum(splits.values(), []))
    assert len(stems) == len(set(stems)) == 10 and dm.dropped == []
    assert all(splits[k] for k in ("train", "val", "test"))
    where = {s: k for k, v in splits.items() for s in v}
    assert where["1009009_r31c0"] == where["1009009_r31c1"]
    # no tile of one split touches (edge or corner) a tile of another
    check_spatial_gap(tile_boxes(stems, r"r(?P<row>\d+)c(?P<col>\d+)", 640), splits, gap=1)


def test_ocdc_batches():
    dm = ocdc(patch_size=256, batch_size=4)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 * 9  # 4 train tiles, 3 x 3 grid of 256 px on 640 px
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, SegBatch) and len(batch) == 4
    assert batch.images.shape == (4, 3, 256, 256) and batch.images.dtype == torch.float32
    assert 0 <= batch.images.min() and batch.images.max() <= 255 and batch.images.max() > 1
    sem = batch.targets.semantic
    assert sem.shape == (4, 256, 256) and sem.dtype == torch.long
    assert set(sem.unique().tolist()) <= {0, 1} and batch.targets.ignore_index == 255
    assert batch.prompts is None and len(batch.meta.source_id) == 4
    # a sample matches the mask file by hand: labels = png // 255 at the window
    sample = dm.datasets["val"][1]
    mask = read_label_mask(OCDC / "masks_bin_png" / f"{sample['source_id']}.png")
    x, y = sample["x"], sample["y"]
    assert (x, y) == (256, 0)
    np.testing.assert_array_equal(sample["labels"].numpy(), mask[y : y + 256, x : x + 256] // 255)


def test_ocdc_whole_tiles_resized():
    dm = ocdc(image_size=64, batch_size=2)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch.images.shape == (2, 3, 64, 64) and batch.targets.semantic.shape == (2, 64, 64)
    assert batch.meta.x == [0, 0]


def test_ocdc_group_split_needs_more_than_one_slide():
    with pytest.raises(SplitError, match="only 1 group"):
        ocdc(split="group").split_sources()


def test_split_files(tmp_path):
    (tmp_path / "train.txt").write_text("1009009_r31c0\n1009009_r31c1\n")
    (tmp_path / "val.txt").write_text("# held out\n1009009_r41c5\n")
    dm = ocdc(split="files", split_files={"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")})
    splits = {k: [s.source_id for s in v] for k, v in dm.split_sources().items()}
    assert splits == {"train": ["1009009_r31c0", "1009009_r31c1"], "val": ["1009009_r41c5"], "test": []}
    (tmp_path / "val.txt").write_text("1009009_r31c1\n")
    with pytest.raises(SplitLeakError, match="1009009_r31c1"):
        ocdc(
            split="files", split_files={"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")}
        ).split_sources()
    (tmp_path / "val.txt").write_text("nope\n")
    with pytest.raises(SplitError, match="nope"):
        ocdc(split="files", split_files={"val": str(tmp_path / "val.txt")}).split_sources()


# ---------------------------------------------------------------------- BCSS mosaic
def test_bcss_train_and_held_out_share_no_pixels():
    dm = bcss(patch_sampling="random", patches_per_source=6)
    sources = dm.split_sources()
    (train,), (val,) = sources["train"], sources["val"]
    assert sources["test"] == []
    assert train.image.shape == (1024, 3072, 3) and train.image is val.image  # one stitched canvas
    assert val.region.x0 - train.region.x1 == 64 and train.region.x0 == 0 and val.region.x1 == 3072
    dm.setup("fit")
    for epoch in (0, 1):
        for i in range(len(dm.datasets["train"])):
            s = dm.datasets["train"][(epoch, i)]
            assert 0 <= s["x"] and s["x"] + 256 <= train.region.x1
    for s in dm.datasets["val"]:
        assert s["x"] >= val.region.x0
    # a held-out patch equals the original tile mask, mapped by hand
    s = next(s for s in dm.datasets["val"] if s["x"] >= 2048)
    raw = read_label_mask(BCSS / "masks" / "TCGA-A2-A3XT-DX1_xmin83566_ymin29931_MPP-0-0-2048.png")
    window = raw[s["y"] : s["y"] + 256, s["x"] - 2048 : s["x"] - 2048 + 256]
    np.testing.assert_array_equal(s["labels"].numpy(), np.vectorize(BCSS_RAW_TO_ID.get)(window))


def test_group_split_of_mosaics(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for region, value in (("A", 10), ("B", 20)):
        for x in (0, 8):
            Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(tmp_path / "images" / f"{region}_t-{x}.png")
            Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "masks" / f"{region}_t-{x}.png")
    dm = PatchFolderDataModule(
        str(tmp_path), "ocdc_binary", split="group", mosaic_pattern=r"-(\d+)$", val_fraction=0.5, patch_size=16
    )
    sources = dm.split_sources()
    (train,), (val,) = sources["train"], sources["val"]
    assert {train.source_id, val.source_id} == {"A", "B"} and train.image.shape == (16, 24, 3)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2  # grid of 16 px on a 24 px wide canvas: x = 0, 8
    assert int(dm.datasets["val"][0]["labels"].min()) == 1


def test_bcss_files_split_is_refused():
    with pytest.raises(SplitError, match="mosaic"):
        bcss(split="files", split_files={"train": "x.txt"}).split_sources()


# ---------------------------------------------------------------------- errors
def test_missing_folders(tmp_path):
    with pytest.raises(DataFolderError, match="not found"):
        PatchFolderDataModule(str(tmp_path / "nowhere"), "ocdc_binary").split_sources()
    with pytest.raises(DataFolderError, match="masks folder"):
        PatchFolderDataModule("seg/ocdc", "ocdc_binary", masks_dir="no_masks").split_sources()


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DataFolderError, match="holds no"):
        pair_files(tmp_path / "images", tmp_path / "masks")


def test_unpaired_stems(tmp_path):
    make_folder(tmp_path, images=("a", "b", "c"), masks=("a",))
    with pytest.raises(PairingError, match="2 image.*no mask.*b, c"):
        pair_files(tmp_path / "images", tmp_path / "masks")
    make_folder(tmp_path, images=(), masks=("a", "b", "c", "d"))
    (tmp_path / "images" / "b.png").unlink()
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(PairingError, match="mask.*no image.*b, c, d"):
        pair_files(tmp_path / "images", tmp_path / "masks")


def test_unlabelled_folder_pairs_without_masks(tmp_path):
    make_folder(tmp_path, images=("a",), masks=())
    (pair,) = pair_files(tmp_path / "images", None)
    assert pair.stem == "a" and pair.mask is None
    sample = PatchFolderDataset([TileSource.from_pair(pair)], ClassMap.binary())[0]
    assert "labels" not in sample and collate_segbatch([sample]).targets is None


def test_uncovered_mask_values_raise_on_read(tmp_path):
    make_folder(tmp_path, images=("a",), masks=("a",), mask_values=(0, 4, 9))
    pairs = pair_files(tmp_path / "images", tmp_path / "masks")
    ds = PatchFolderDataset([TileSource.from_pair(p) for p in pairs], load_class_map("ocdc_binary"))
    with pytest.raises(ClassMapError, match=r"a\.png has values \[4, 9\]"):
        ds[0]


def test_collate_errors():
    a = {"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "source_id": "a", "x": 0, "y": 0}
    with pytest.raises(CollateError, match="differ in shape"):
        collate_segbatch([a, {**a, "image": torch.zeros(3, 5, 4, dtype=torch.uint8)}])
    with pytest.raises(CollateError, match="labels"):
        collate_segbatch([a, {**a, "labels": torch.zeros(4, 4, dtype=torch.long)}])
    with pytest.raises(CollateError, match="empty"):
        collate_segbatch([])


# ---------------------------------------------------------------------- augmentation
def test_augment_moves_labels_with_pixels():
    labels = torch.arange(12).view(3, 4) % 5
    image = (labels * 50).to(torch.uint8).expand(3, 3, 4).clone()
    plain = Augment(brightness=0, contrast=0, saturation=0)
    for i in range(8):
        out_image, out_labels = plain(image, labels, torch.Generator().manual_seed(i))
        assert out_image.shape == (3, 3, 4)  # non-square: no 90° turns
        assert torch.equal(out_image[0].long(), out_labels * 50)
    square = torch.arange(16).view(4, 4)
    shapes = {
        tuple(
            plain(square[None].expand(3, 4, 4).to(torch.uint8), square, torch.Generator().manual_seed(i))[1]
            .flatten()
            .tolist()
        )
        for i in range(40)
    }
    assert len(shapes) == 8  # the 8 symmetries of the square all occur


def test_augmentation_is_deterministic_per_seed_epoch_index():
    def dataset(seed):
        return ocdc(patch_size=128, patch_sampling="random", patches_per_source=2, augment=True, seed=seed)._dataset(
            "train"
        )

    a, b, c = dataset(0), dataset(0), dataset(1)
    for key in [(0, 0), (1, 0), (0, 5)]:
        sa, sb = a[key], b[key]
        assert (sa["x"], sa["y"]) == (sb["x"], sb["y"])
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["labels"], sb["labels"])
    moved = [(a[(0, i)]["x"], a[(0, i)]["y"]) != (a[(1, i)]["x"], a[(1, i)]["y"]) for i in range(len(a))]
    assert any(moved)  # a new epoch draws new crops
    assert any(not torch.equal(a[(0, i)]["image"], c[(0, i)]["image"]) for i in range(len(a)))


def test_two_workers_give_the_same_batches():
    def batches(workers):
        dm = ocdc(
            patch_size=128,
            image_size=32,
            patch_sampling="random",
            patches_per_source=2,
            augment=True,
            batch_size=3,
            num_workers=workers,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return list(loader)

    single, double = batches(0), batches(2)
    assert len(single) == len(double) == 3  # 8 samples in batches of 3
    for s, d in zip(single, double):
        assert torch.equal(s.images, d.images) and torch.equal(s.targets.semantic, d.targets.semantic)
        assert s.meta.source_id == d.meta.source_id


class _PixelClassifier(pl.LightningModule):
    """A 1x1 convolution, enough to drive the datamodule through a real fit."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 1)
        self.seen: list[tuple[int, list[int]]] = []

    def training_step(self, batch: SegBatch, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch.meta.x))
        logits = self.conv(batch.images / 255.0)
        return torch.nn.functional.cross_entropy(
            logits, batch.targets.semantic, ignore_index=batch.targets.ignore_index
        )

    def validation_step(self, batch: SegBatch, batch_idx: int) -> None:
        self.log(
            "val_loss",
            torch.nn.functional.cross_entropy(
                self.conv(batch.images / 255.0), batch.targets.semantic, ignore_index=255
            ),
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_sees_new_crops_each_epoch():
    dm = bcss(patch_size=64, patch_sampling="random", patches_per_source=4, batch_size=4, augment=True)
    model = _PixelClassifier(dm.num_classes)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=dm)
    epochs = dict(model.seen)
    assert set(epochs) == {0, 1} and epochs[0] != epochs[1]
