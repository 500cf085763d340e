import numpy as np
import pytest
import torch
from PIL import Image

import pathseg_core  # noqa: F401 - arms the torchvision fix first
from pathseg_core.data.mosaic import MosaicError, Region, crop_regions, stitch_tiles, tile_offset
from pathseg_core.data.paths import data_root
from pathseg_core.data.sampling import EpochSampler, PatchSizeError, grid_windows, random_window, sample_generator
from pathseg_core.data.splits import SplitError
from pathseg_core.data.tile_io import read_label_mask, read_rgb

BCSS = data_root() / "seg" / "bcss"
OFFSET = r"-(\d+)$"


def bcss_paths():
    images = sorted((BCSS / "images").glob("*.png"))
    return images, [BCSS / "masks" / p.name for p in images]


def write_tiles(tmp_path, canvas, mask, offsets, width):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    images, masks = [], []
    for x in offsets:
        name = f"strip-{x}.png"
        Image.fromarray(canvas[:, x : x + width]).save(tmp_path / "images" / name)
        Image.fromarray(mask[:, x : x + width]).save(tmp_path / "masks" / name)
        images.append(tmp_path / "images" / name)
        masks.append(tmp_path / "masks" / name)
    return images, masks


def test_tile_offset():
    assert tile_offset("TCGA-A2-A3XT-DX1_xmin83566_ymin29931_MPP-0-0-1536", OFFSET) == (1536, 0)
    assert tile_offset("t_x12_y34", r"_x(?P<x>\d+)_y(?P<y>\d+)") == (12, 34)
    with pytest.raises(MosaicError, match="does not match"):
        tile_offset("t", OFFSET)


def test_stitch_bcss_strip():
    images, masks = bcss_paths()
    mosaic = stitch_tiles(images, masks, OFFSET, source_id="strip")
    assert mosaic.size == (1024, 3072)
    assert mosaic.mask.shape == (1024, 3072) and mosaic.mask.dtype == np.uint8
    assert sorted(x for x, _ in mosaic.offsets.values()) == [0, 512, 1024, 1536, 2048]
    for image, mask in zip(images, masks):
        x = int(image.stem.rsplit("-", 1)[1])
        np.testing.assert_array_equal(mosaic.image[:, x : x + 1024], read_rgb(image))
        np.testing.assert_array_equal(mosaic.mask[:, x : x + 1024], read_label_mask(mask))
    assert set(np.unique(mosaic.mask).tolist()) == {1, 2, 3, 7, 15}


def test_stitch_synthetic_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (6, 16, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (6, 16), dtype=np.uint8)
    images, masks = write_tiles(tmp_path, canvas, mask, [0, 4, 8], width=8)
    mosaic = stitch_tiles(images, masks, OFFSET, "strip")
    np.testing.assert_array_equal(mosaic.image, canvas)
    np.testing.assert_array_equal(mosaic.mask, mask)
    # one overlapping mask pixel that disagrees
    bad = mask[:, 4:12].copy()
    bad[0, 0] = (bad[0, 0] + 1) % 3
    Image.fromarray(bad).save(masks[1])
    with pytest.raises(MosaicError, match="disagrees"):
        stitch_tiles(images, masks, OFFSET, "strip")
    # a missing middle tile leaves no hole here (0..8 and 8..16 cover) but dropping the first does
    with pytest.raises(MosaicError, match="uncovered"):
        stitch_tiles(images[1:], None, OFFSET, "strip")
    with pytest.raises(MosaicError, match="pair up"):
        stitch_tiles(images, masks[::-1], OFFSET, "strip")


def test_crop_regions_share_no_pixels():
    regions = crop_regions(3072, 1024, {"train": 0.8, "val": 0.2, "test": 0.0}, gap=64)
    # 3072 - 64 = 3008 usable: train 2406, val 602 (largest remainder)
    assert regions == {"train": Region(0, 0, 2406, 1024), "val": Region(2470, 0, 3072, 1024)}
    assert not regions["train"].overlaps(regions["val"])
    three = crop_regions(100, 10, {"a": 0.5, "b": 0.25, "c": 0.25}, gap=10, axis="x")
    # 100 - 2 * 10 = 80 usable: 40, 20, 20
    assert [(r.x0, r.x1) for r in three.values()] == [(0, 40), (50, 70), (80, 100)]
    vertical = crop_regions(10, 100, {"a": 0.5, "b": 0.5}, gap=0, axis="y")
    assert vertical == {"a": Region(0, 0, 10, 50), "b": Region(0, 50, 10, 100)}
    with pytest.raises(SplitError, match="lower the gap"):
        crop_regions(100, 10, {"a": 0.5, "b": 0.5}, gap=99)


def test_grid_windows():
    assert grid_windows(Region(0, 0, 640, 640), 256) == [(x, y) for y in (0, 256, 384) for x in (0, 256, 384)]
    assert grid_windows(Region(2470, 0, 3072, 1024), 512) == [(2470, 0), (2560, 0), (2470, 512), (2560, 512)]
    assert grid_windows(Region(0, 0, 10, 4), 4, stride=3) == [(0, 0), (3, 0), (6, 0)]
    with pytest.raises(PatchSizeError, match="does not fit"):
        grid_windows(Region(0, 0, 100, 10), 16)


def test_random_window_stays_inside_and_is_seeded():
    region = Region(100, 0, 300, 64)
    xs = [random_window(region, 64, sample_generator(0, 0, i)) for i in range(50)]
    assert all(100 <= x <= 236 and y == 0 for x, y in xs)
    assert xs == [random_window(region, 64, sample_generator(0, 0, i)) for i in range(50)]
    assert len(set(xs)) > 10


def test_epoch_sampler_keys():
    sampler = EpochSampler(range(5), shuffle=True, seed=1, num_replicas=1, rank=0)
    first = list(sampler)
    assert sorted(i for _, i in first) == list(range(5)) and {e for e, _ in first} == {0}
    sampler.set_epoch(3)
    again = list(sampler)
    assert {e for e, _ in again} == {3}
    expected = torch.randperm(5, generator=torch.Generator().manual_seed(1 + 3)).tolist()
    assert [i for _, i in again] == expected
    # two ranks split the indices (padded to equal length)
    ranks = [list(EpochSampler(range(5), num_replicas=2, rank=r)) for r in (0, 1)]
    assert [i for _, i in ranks[0]] == [0, 2, 4] and [i for _, i in ranks[1]] == [1, 3, 0]
