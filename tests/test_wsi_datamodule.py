"""WSIPatchDataModule on the BCSS fixture slide: batches, splits, sampling modes, workers."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import pathseg_core  # noqa: F401
from pathseg_core.contracts import SegBatch
from pathseg_core.data.class_map import load_class_map
from pathseg_core.data.splits import SplitError
from pathseg_core.data.wsi.datamodule import WSIPatchDataModule, split_slides
from pathseg_core.data.wsi.errors import MppMissingError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.label_mask import LabelMaskReader
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tiling import grid_tiles
from pathseg_core.testing.fixtures import make_bcss_slide

PATCH = 128


@pytest.fixture(scope="module")
def bcss(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Path]:
    """The BCSS strip, plus a copy standing in for a second (validation) slide."""
    folder = tmp_path_factory.mktemp("bcss_dm")
    slide, mask, geojson = make_bcss_slide(folder)
    shutil.copy(slide, folder / "bcss_copy.tif")
    shutil.copy(geojson, folder / "bcss_copy.geojson")
    return {
        "slide": slide,
        "mask": mask,
        "geojson": geojson,
        "copy": folder / "bcss_copy.tif",
        "cache": folder / "cache",
        "names": data_root / "seg" / "bcss" / "class_names.json",
    }


def _dm(bcss: dict[str, Path], **kw: object) -> WSIPatchDataModule:
    args: dict[str, object] = {
        "slides": [str(bcss["slide"]), str(bcss["copy"])],
        "class_map": "bcss_5class",
        "code_names": str(bcss["names"]),
        "val_slides": ["bcss_copy"],
        "mpp": 0.5,
        "patch_size": PATCH,
        "samples_per_slide": 4,
        "min_tissue": 0.3,
        "batch_size": 2,
        "cache_dir": str(bcss["cache"]),
    }
    args.update(kw)
    return WSIPatchDataModule(**args)  # type: ignore[arg-type]


def test_random_batches_with_two_workers(bcss: dict[str, Path]) -> None:
    dm = _dm(bcss, num_workers=2)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 4 samples of one training slide, batch 2
    reader = SlideReader(bcss["slide"])
    mask = LabelMaskReader(bcss["mask"], class_map=load_class_map("bcss_5class"))
    for batch in batches:
        assert isinstance(batch, SegBatch)
        assert batch.images.shape == (2, 3, PATCH, PATCH) and batch.images.dtype == torch.float32
        assert 0 <= batch.images.min() and batch.images.max() <= 255
        assert batch.context is None
        semantic = batch.targets.semantic
        assert semantic.shape == (2, PATCH, PATCH) and semantic.dtype == torch.long
        assert set(semantic.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
        assert batch.meta.source_id == ["bcss_strip"] * 2
        assert batch.meta.mpp == [pytest.approx(0.5)] * 2 and batch.meta.level == [1, 1]
        for i, (x, y) in enumerate(zip(batch.meta.x, batch.meta.y)):
            expected = reader.read_region(x, y, PATCH, PATCH, mpp=0.5)
            assert torch.equal(batch.images[i], torch.from_numpy(expected).permute(2, 0, 1).float())
            labels = mask.read(PatchFrame(float(x), float(y), 2.0, PATCH, PATCH))  # independent: the mask TIFF
            assert torch.equal(semantic[i], torch.from_numpy(labels))


def test_validation_grid_is_the_tissue_grid_of_the_val_slide(bcss: dict[str, Path]) -> None:
    dm = _dm(bcss)
    loader = dm.val_dataloader()
    dataset = dm.datasets["val"]
    source = dm.source(1)
    tiles = grid_tiles(source.reader, tile_size=PATCH, mpp=0.5, tissue=source.tissue, min_tissue=0.3)
    assert 0 < len(dataset) == len(tiles) <= 12 * 4
    first = next(iter(loader))
    assert first.meta.source_id == ["bcss_copy"] * 2
    assert (first.meta.x, first.meta.y) == ([tiles[0].x0, tiles[1].x0], [tiles[0].y0, tiles[1].y0])
    assert dm.num_classes == 5 and dm.ignore_index == 255 and dm.class_names[1] == "tumor"


def test_concentric_batches_carry_context(bcss: dict[str, Path]) -> None:
    dm = _dm(bcss, sampling="concentric", augment=True, color_jitter=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.context is not None and batch.context.shape == (2, 3, PATCH, PATCH)
    assert batch.context_targets is not None and batch.context_targets.semantic.shape == (2, PATCH, PATCH)
    q = PATCH // 4
    for i in range(2):
        # Same centre, twice the field of view, same flips / rotation: the context's centre
        # half is the patch at half resolution (exactly: level 2 of the fixture is level 1
        # halved with INTER_AREA, and both frames sit on their levels' pixel grids).
        image = batch.images[i].permute(1, 2, 0).numpy().astype(np.uint8)
        small = cv2.resize(image, (PATCH // 2, PATCH // 2), interpolation=cv2.INTER_AREA).astype(np.float64)
        centre = batch.context[i, :, q : 3 * q, q : 3 * q].permute(1, 2, 0).numpy()
        assert np.abs(centre - small).max() <= 1.0
    val = next(iter(dm.val_dataloader()))
    assert val.context is not None  # evaluation keeps the context, on grid centres


def test_geojson_and_label_mask_annotations_give_the_same_labels(bcss: dict[str, Path]) -> None:
    from_geojson = _dm(bcss)
    from_mask = _dm(bcss, annotations=[str(bcss["mask"]), str(bcss["mask"])], code_names=None)
    from_geojson.setup("fit")
    from_mask.setup("fit")
    for key in [(0, 0), (0, 3), (2, 1)]:
        a, b = from_geojson.datasets["train"][key], from_mask.datasets["train"][key]
        assert (a["x"], a["y"]) == (b["x"], b["y"])
        assert torch.equal(a["labels"], b["labels"])


def test_samples_are_keyed_by_epoch_and_index(bcss: dict[str, Path]) -> None:
    dm = _dm(bcss)
    dm.setup("fit")
    ds = dm.datasets["train"]
    a, again, other_epoch = ds[(0, 1)], ds[(0, 1)], ds[(1, 1)]
    assert (a["x"], a["y"]) == (again["x"], again["y"]) and torch.equal(a["image"], again["image"])
    assert (a["x"], a["y"]) != (other_epoch["x"], other_epoch["y"])
    clone = pickle.loads(pickle.dumps(ds))  # spawn-started workers receive a pickled dataset
    assert torch.equal(clone[(0, 1)]["image"], a["image"])


def test_grid_training_and_stride(bcss: dict[str, Path]) -> None:
    dm = _dm(bcss, sampling="grid", stride=PATCH // 2, min_tissue=0.0)
    dm.setup("fit")
    # Footprint 256, stride 128 level-0 px over 3072 x 1024: 23 x 7 tiles.
    assert len(dm.datasets["train"]) == 23 * 7


def test_missing_mpp_and_bad_splits(bcss: dict[str, Path], data_root: Path) -> None:
    tcga = data_root / "wsi" / "tcga_cr_7395" / "tcga-cr-7395-01a-01-ts1.svs"
    dm = WSIPatchDataModule(slides=[str(tcga)], class_map="bcss_5class", annotations=[str(bcss["geojson"])])
    with pytest.raises(MppMissingError, match="pass --mpp"):
        dm.setup("fit")
    with pytest.raises(SplitError, match=r"val_slides \['nope'\] are not among slides"):
        _dm(bcss, val_slides=["nope"])
    with pytest.raises(SplitError, match=r"1 items cannot fill the splits \['train', 'val'\]"):
        _dm(bcss, slides=[str(bcss["slide"])], val_slides=None, val_fraction=0.5)
    with pytest.raises(SplitError, match="got 1 annotations for 2 slides"):
        _dm(bcss, annotations=[str(bcss["geojson"])])


def test_split_by_fraction_is_seeded_and_disjoint() -> None:
    slides = [f"/data/s{i}.svs" for i in range(5)]
    split = split_slides(slides, val_slides=None, test_slides=None, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(5))
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (3, 1, 1)
    assert split == split_slides(slides, val_slides=None, test_slides=None, val_fraction=0.2, test_fraction=0.2, seed=3)
    named = split_slides(
        slides, val_slides=["s1"], test_slides=["/data/s4.svs"], val_fraction=0, test_fraction=0, seed=0
    )
    assert named == {"val": [1], "test": [4], "train": [0, 2, 3]}


def test_init_args_are_flat_and_typed_for_jsonargparse() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(WSIPatchDataModule, "data")
    cfg = parser.parse_args(
        ["--data.slides=[a.svs, b.svs]", "--data.class_map=bcss_5class", "--data.sampling=concentric"]
    )
    assert cfg.data.slides == ["a.svs", "b.svs"] and cfg.data.sampling == "concentric" and cfg.data.mpp == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--data.slides=[a.svs]", "--data.class_map=x", "--data.sampling=spiral"])
