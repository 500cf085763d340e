"""Grid tiling, frames, the concentric sampler and the random foreground sampler."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import pathseg_core  # noqa: F401
from pathseg_core.data.wsi.errors import NoForegroundError
from pathseg_core.data.wsi.frames import PatchFrame, map_boxes, map_points
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.samplers import ConcentricSampler, RandomForegroundSampler, hr_to_context
from pathseg_core.data.wsi.tiling import grid_shape, grid_tiles, read_tile
from pathseg_core.data.wsi.tissue import TissueMask, detect_tissue
from pathseg_core.testing.fixtures import decode_coordinates, make_coordinate_slide, write_pyramid_tiff


@pytest.fixture(scope="module")
def cmu(data_root: Path) -> SlideReader:
    return SlideReader(data_root / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs")


@pytest.fixture(scope="module")
def coord_reader(tmp_path_factory: pytest.TempPathFactory) -> SlideReader:
    return SlideReader(make_coordinate_slide(tmp_path_factory.mktemp("coord") / "coord.tif", 1000, 600, mpp=0.5))


@pytest.fixture(scope="module")
def marker_reader(tmp_path_factory: pytest.TempPathFactory) -> SlideReader:
    """White 1200 x 800 slide (mpp 0.5) with a black 8 x 8 square whose top-left is (600, 400)."""
    image = np.full((800, 1200, 3), 255, dtype=np.uint8)
    image[400:408, 600:608] = 0
    return SlideReader(write_pyramid_tiff(tmp_path_factory.mktemp("marker") / "m.tif", image, mpp=0.5, levels=2))


def _dark_centroid(rgb: np.ndarray) -> np.ndarray:
    """Darkness-weighted centroid in continuous patch ``xy`` (pixel centres at +0.5)."""
    dark = 255.0 - rgb.astype(np.float64).mean(axis=2)
    rows, cols = np.indices(dark.shape)
    return np.array([(dark * (cols + 0.5)).sum(), (dark * (rows + 0.5)).sum()]) / dark.sum()


# ---------------------------------------------------------------------- grid
def test_grid_shape_hand_computed() -> None:
    assert grid_shape(2220, 512, 512) == 5  # 0, 512, …, 2048 (last hangs over)
    assert grid_shape(2048, 512, 512) == 4  # exact fit
    assert grid_shape(100, 512, 512) == 1  # slide smaller than a tile
    assert grid_shape(2967, 512, 384) == 8


def test_grid_counts_on_cmu(cmu: SlideReader) -> None:
    tiles = grid_tiles(cmu, tile_size=256, mpp=0.998)  # downsample 2 → 512 level-0 px
    assert len(tiles) == 5 * 6
    first, last = tiles[0], tiles[-1]
    assert (first.x0, first.y0, first.w0, first.h0, first.out_w, first.row, first.col) == (0, 0, 512, 512, 256, 0, 0)
    assert (last.x0, last.y0, last.row, last.col) == (2048, 2560, 5, 4)
    assert first.downsample == pytest.approx(2.0) and first.mpp == pytest.approx(0.998)
    overlapped = grid_tiles(cmu, tile_size=256, mpp=0.998, overlap=64)  # stride 192 → 384 level-0 px
    assert len(overlapped) == 6 * 8
    assert overlapped[1].x0 - overlapped[0].x0 == 384
    assert read_tile(cmu, last).shape == (256, 256, 3)


def test_grid_tissue_filter(cmu: SlideReader, tmp_path: Path) -> None:
    tissue = detect_tissue(cmu, cache_dir=tmp_path)
    all_tiles = grid_tiles(cmu, tile_size=256, mpp=0.998)
    kept = grid_tiles(cmu, tile_size=256, mpp=0.998, tissue=tissue, min_tissue=0.5)
    assert 0 < len(kept) < len(all_tiles)
    assert all(t.tissue >= 0.5 for t in kept)
    assert {(t.row, t.col) for t in kept} == {
        (t.row, t.col) for t in all_tiles if tissue.fraction(t.x0, t.y0, t.w0, t.h0) >= 0.5
    }
    with pytest.raises(ValueError, match="needs a tissue mask"):
        grid_tiles(cmu, tile_size=256, mpp=0.998, min_tissue=0.5)


def test_tiles_read_the_pixels_they_name(coord_reader: SlideReader) -> None:
    tiles = grid_tiles(coord_reader, tile_size=128, overlap=28)  # level 0, stride 100
    assert len(tiles) == grid_shape(1000, 128, 100) * grid_shape(600, 128, 100) == 10 * 6
    tile = tiles[13]
    xy = decode_coordinates(read_tile(coord_reader, tile))
    assert (tile.row, tile.col) == (1, 3)
    assert xy[0, 0].tolist() == [tile.x0, tile.y0] == [300, 100]
    assert xy[-1, -1].tolist() == [427, 227]


# ---------------------------------------------------------------------- frames
def test_frame_mapping_hand_computed() -> None:
    frame = PatchFrame(100.0, 200.0, 2.0, 64, 32)
    assert frame.footprint == (128.0, 64.0)
    assert frame.centre == (164.0, 232.0)
    assert frame.from_level0([[120.0, 220.0], [228.0, 264.0]]).tolist() == [[10.0, 10.0], [64.0, 32.0]]
    assert frame.boxes_from_level0([120.0, 220.0, 160.0, 300.0]).tolist() == [10.0, 10.0, 30.0, 50.0]
    other = PatchFrame(0.0, 0.0, 4.0, 64, 64)
    assert map_points([[0.0, 0.0]], frame, other).tolist() == [[25.0, 50.0]]
    assert map_boxes([0.0, 0.0, 64.0, 32.0], frame, other).tolist() == [25.0, 50.0, 57.0, 66.0]


# ---------------------------------------------------------------------- concentric
def test_hr_to_context_formula_matches_frames(coord_reader: SlideReader) -> None:
    sampler = ConcentricSampler(coord_reader, size=256, downsample=1.5, factor=2.0)
    hr, lr = sampler.frames(1000.0, 700.0)
    assert hr.centre == lr.centre
    assert lr.downsample == 3.0 and lr.width == hr.width == 256
    points = np.random.default_rng(0).uniform(0, 256, (20, 2))
    assert np.allclose(hr_to_context(points, 256, 2.0), map_points(points, hr, lr))
    assert np.allclose(hr_to_context(points, 256, 2.0), points / 2 + 256 / 4)  # x_lr = x_hr / 2 + size / 4
    assert np.allclose(hr_to_context([[0.0, 0.0, 256.0, 256.0]], 256), [[64.0, 64.0, 192.0, 192.0]])
    wide = ConcentricSampler(coord_reader, size=256, downsample=1.5, factor=4.0)
    assert np.allclose(hr_to_context(points, 256, 4.0), map_points(points, *wide.frames(1000.0, 700.0)))


def test_concentric_centre_alignment_on_marker(marker_reader: SlideReader) -> None:
    sampler = ConcentricSampler(marker_reader, size=64, mpp=0.5, factor=2.0)
    marker_centre = np.array([604.0, 404.0])  # level-0 centre of the 8 x 8 square
    for centre in [(604.0, 404.0), (590.0, 420.0)]:
        pair = sampler.read(*centre)
        assert pair.image.shape == pair.context.shape == (64, 64, 3)
        hr_xy, lr_xy = _dark_centroid(pair.image), _dark_centroid(pair.context)
        assert np.allclose(hr_xy, pair.frame.from_level0(marker_centre), atol=0.05)
        assert np.allclose(lr_xy, hr_to_context(hr_xy, 64), atol=0.05)
    # Marker is 8 px wide in the patch and about 4 px in the context.
    pair = sampler.read(604.0, 404.0)
    assert (pair.image.mean(axis=2) < 128).sum() == 64
    assert 12 <= (pair.context.mean(axis=2) < 200).sum() <= 20


def test_concentric_padding_at_the_slide_corner(coord_reader: SlideReader) -> None:
    sampler = ConcentricSampler(coord_reader, size=100, factor=2.0)  # level 0 and downsample 2
    pair = sampler.read(10.0, 20.0)
    assert pair.frame.x0 == -40.0 and pair.frame.y0 == -30.0
    assert pair.context_frame.x0 == -90.0 and pair.context_frame.y0 == -80.0
    assert (pair.image[:30] == 255).all() and (pair.image[:, :40] == 255).all()
    assert decode_coordinates(pair.image[30, 40]).tolist() == [0, 0]
    # Context pixel (c, r) covers level-0 [-90 + 2c, -88 + 2c): columns < 45 and rows < 40 are outside.
    assert (pair.context[:40] == 255).all() and (pair.context[:, :45] == 255).all()
    assert (pair.context[40:, 45:] != 255).any(axis=2).mean() > 0.9


# ---------------------------------------------------------------------- random foreground
def _square_tissue(slide_size: tuple[int, int] = (1000, 600)) -> TissueMask:
    """Tissue only in level-0 x 400..600, y 200..400 (mask at downsample 10)."""
    mask = np.zeros((60, 100), dtype=bool)
    mask[20:40, 40:60] = True
    return TissueMask(mask, slide_size=slide_size, downsample=10.0, mpp=5.0, threshold=0.0)


@pytest.mark.parametrize("propose", ["tissue", "uniform"])
def test_random_sampler_respects_threshold_and_seed(coord_reader: SlideReader, propose: str) -> None:
    tissue = _square_tissue()
    sampler = RandomForegroundSampler(
        coord_reader,
        tissue,
        size=100,
        min_tissue=0.8,
        max_attempts=2000,
        propose=propose,  # type: ignore[arg-type]
    )
    frames = [sampler.sample(np.random.default_rng(s)) for s in range(20)]
    for f in frames:
        assert tissue.fraction(f.x0, f.y0, 100, 100) >= 0.8
        assert 375 <= f.x0 <= 525 and 175 <= f.y0 <= 325  # 80 of 100 px inside 400..600 x 200..400
        assert f.x0 == int(f.x0)
        xy = decode_coordinates(coord_reader.read_frame(f))
        assert xy[0, 0].tolist() == [f.x0, f.y0]
    again = [sampler.sample(np.random.default_rng(s)) for s in range(20)]
    assert frames == again
    assert len(set(frames)) > 10


def test_random_sampler_large_patch_at_target_mpp(coord_reader: SlideReader) -> None:
    tissue = _square_tissue()
    sampler = RandomForegroundSampler(coord_reader, tissue, size=64, mpp=2.0, min_tissue=0.5)
    frame = sampler.sample(np.random.default_rng(0))
    assert frame.downsample == 4.0 and frame.footprint == (256.0, 256.0)
    assert coord_reader.read_frame(frame).shape == (64, 64, 3)


def test_random_sampler_gives_up_with_a_clear_error(coord_reader: SlideReader) -> None:
    sampler = RandomForegroundSampler(coord_reader, _square_tissue(), size=400, min_tissue=0.9, max_attempts=25)
    with pytest.raises(NoForegroundError, match=r"no 400x400 patch .* after 25 attempts .*lower min_tissue"):
        sampler.sample(np.random.default_rng(0))
    empty = TissueMask(np.zeros((60, 100), bool), slide_size=(1000, 600), downsample=10.0, mpp=None, threshold=0.0)
    with pytest.raises(NoForegroundError, match="tissue covers 0.0%"):
        RandomForegroundSampler(coord_reader, empty, size=10).sample(np.random.default_rng(0))


def test_context_read_matches_downscaled_hr_on_real_slide(cmu: SlideReader) -> None:
    sampler = ConcentricSampler(cmu, size=128, mpp=0.499)
    pair = sampler.read(1100.0, 1500.0)
    centre = pair.context[32:96, 32:96].astype(np.float64)
    small = cv2.resize(pair.image, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.abs(centre - small).mean() < 2.0
