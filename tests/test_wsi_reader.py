"""SlideReader on the two real SVS slides and on generated TIFFs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

import pathseg_core  # noqa: F401  (arms the torchvision fix before anything else)
from pathseg_core.data.wsi.backends import composite_alpha
from pathseg_core.data.wsi.errors import MppMissingError, ResolutionError, SlideFormatError, SlideNotFoundError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.testing.fixtures import decode_coordinates, make_coordinate_slide, make_tiled_slide


@pytest.fixture(scope="module")
def cmu(data_root: Path) -> Path:
    return data_root / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def tcga(data_root: Path) -> Path:
    return data_root / "wsi" / "tcga_cr_7395" / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(scope="module")
def coord_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coordinate_slide(tmp_path_factory.mktemp("coord") / "coord.tif", 1000, 600, mpp=0.5)


def test_cmu_metadata(cmu: Path) -> None:
    r = SlideReader(cmu)
    assert r.dimensions == (2220, 2967)
    assert r.level_count == 1
    assert r.mpp == pytest.approx(0.499)
    assert r.info.backend == "openslide"
    assert r.source_id == "CMU-1-Small-Region"


def test_tcga_metadata_and_missing_mpp(tcga: Path) -> None:
    r = SlideReader(tcga)
    assert r.dimensions == (4443, 3567)
    assert r.level_dimensions == ((4443, 3567), (2221, 1783))
    assert r.level_downsamples[1] == pytest.approx(2.0005, abs=1e-3)
    assert r.mpp is None
    with pytest.raises(MppMissingError, match=r"tcga-cr-7395-01a-01-ts1.svs has no mpp in its metadata; pass --mpp"):
        r.read_region(0, 0, 16, 16, mpp=1.0)
    # Reads that need no mpp still work.
    assert r.read_region(0, 0, 16, 16, downsample=4).shape == (16, 16, 3)


def test_tcga_with_mpp_override_reads_level_one_natively(tcga: Path) -> None:
    r = SlideReader(tcga, mpp=0.25)
    assert r.mpp == 0.25
    # 0.5 µm/px = downsample 2; level 1 (2.0005) is within tolerance: read natively, no resampling.
    assert r.best_level(2.0) == 1
    got = r.read_region(1000, 800, 64, 48, mpp=0.5)
    assert np.array_equal(got, r.read_region(1000, 800, 64, 48, level=1))
    ref = np.asarray(openslide.OpenSlide(str(tcga)).read_region((1000, 800), 1, (64, 48)))[..., :3]
    assert np.array_equal(got, ref)


def test_read_at_coarser_mpp_matches_block_average_of_level0(cmu: Path) -> None:
    r = SlideReader(cmu)
    x, y, w, h = 301, 517, 120, 80
    got = r.read_region(x, y, w, h, mpp=0.998).astype(np.float64)  # downsample exactly 2
    base = np.asarray(openslide.OpenSlide(str(cmu)).read_region((x, y), 0, (2 * w, 2 * h)))[..., :3]
    blocks = base.astype(np.float64).reshape(h, 2, w, 2, 3).mean(axis=(1, 3))
    assert np.abs(got - blocks).max() <= 1.0
    # 1.0 µm/px (downsample 2.004) is close to the same picture.
    near = r.read_region(x, y, w, h, mpp=1.0).astype(np.float64)
    assert near.shape == (h, w, 3)
    assert np.abs(near - blocks).mean() < 6.0


def test_level0_read_equals_openslide(cmu: Path) -> None:
    got = SlideReader(cmu).read_region(100, 200, 300, 150)
    ref = np.asarray(openslide.OpenSlide(str(cmu)).read_region((100, 200), 0, (300, 150)))[..., :3]
    assert got.dtype == np.uint8
    assert np.array_equal(got, ref)


def test_tifffile_backend_matches_openslide(cmu: Path) -> None:
    a = SlideReader(cmu, backend="openslide")
    b = SlideReader(cmu, backend="tifffile")
    assert b.info.backend == "tifffile"
    assert b.mpp == pytest.approx(0.499)  # from the Aperio ImageDescription
    for box in [(0, 0, 240, 240), (230, 470, 300, 260), (2000, 2800, 220, 167)]:
        assert np.array_equal(a.read_region(*box), b.read_region(*box))


def test_border_padding_is_white_and_aligned(cmu: Path) -> None:
    r = SlideReader(cmu)
    inner = r.read_region(0, 0, 200, 150)
    got = r.read_region(-100, -50, 300, 200)
    assert (got[:50] == 255).all() and (got[:, :100] == 255).all()
    assert np.array_equal(got[50:, 100:], inner)
    # Right / bottom edge: slide is 2220 x 2967.
    edge = r.read_region(2100, 2900, 200, 100)
    assert (edge[:, 120:] == 255).all() and (edge[67:] == 255).all()
    assert np.array_equal(edge[:67, :120], r.read_region(2100, 2900, 120, 67))
    # Entirely outside; custom fill.
    assert (SlideReader(cmu, fill=0).read_region(5000, 5000, 8, 8) == 0).all()
    # Downsampled border: left half of the output lies left of the slide.
    half = r.read_region(-200, 100, 200, 100, downsample=2)
    assert (half[:, :100] == 255).all() and half[:, 100:].mean() < 250


def test_finer_than_level0_is_an_error(cmu: Path) -> None:
    with pytest.raises(ResolutionError, match="finer than level 0"):
        SlideReader(cmu).read_region(0, 0, 10, 10, mpp=0.25)
    with pytest.raises(ResolutionError, match="levels 0..0"):
        SlideReader(cmu).read_region(0, 0, 10, 10, level=1)


def test_generated_tiff_opens_in_openslide_and_reads_exact_coordinates(coord_slide: Path) -> None:
    slide = openslide.OpenSlide(str(coord_slide))
    assert slide.dimensions == (1000, 600)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    for backend in ("openslide", "tifffile"):
        r = SlideReader(coord_slide, backend=backend)
        assert r.mpp == pytest.approx(0.5)
        assert r.level_dimensions == ((1000, 600), (500, 300), (250, 150))
        xy = decode_coordinates(r.read_region(317, 211, 50, 40))
        assert (xy[..., 0] == np.arange(317, 367)[None, :]).all()
        assert (xy[..., 1] == np.arange(211, 251)[:, None]).all()


def test_snap_frame_moves_the_corner_onto_the_level_grid(coord_slide: Path) -> None:
    r = SlideReader(coord_slide)
    frame = PatchFrame(457.0, 301.0, 2.0, 8, 8)  # read natively from level 1 (downsample 2)
    snapped = r.snap_frame(frame)
    assert (snapped.x0, snapped.y0, snapped.downsample) == (456.0, 300.0, 2.0)
    assert np.array_equal(r.read_frame(frame), r.read_frame(snapped))
    assert r.snap_frame(PatchFrame(457.0, 301.0, 1.0, 8, 8)).x0 == 457.0  # level 0: already on the grid
    assert r.snap_frame(PatchFrame(457.0, 301.0, 3.0, 8, 8)).x0 == 456.0  # resampled from level 1


def test_pickle_before_and_after_use(cmu: Path) -> None:
    r = SlideReader(cmu)
    fresh = pickle.loads(pickle.dumps(r))
    expected = r.read_region(10, 20, 30, 40)
    assert r.is_open
    blob = pickle.dumps(r)
    assert len(blob) < 2000  # metadata only, no handle or pixels
    clone = pickle.loads(blob)
    assert not clone.is_open and clone.dimensions == (2220, 2967)
    assert np.array_equal(clone.read_region(10, 20, 30, 40), expected)
    assert np.array_equal(fresh.read_region(10, 20, 30, 40), expected)
    r.close()
    assert not r.is_open
    assert np.array_equal(r.read_region(10, 20, 30, 40), expected)  # re-opens on use


def test_alpha_composited_onto_fill(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 100
    rgba[0, :, 3] = 255
    rgba[1, :, 3] = 128
    out = composite_alpha(rgba, 255)
    assert (out[0] == 100).all() and (out[2:] == 255).all()
    assert (out[1] == round(100 * 128 / 255 + 255 * 127 / 255)).all()
    # An RGBA TIFF read through tifffile: transparent background becomes white.
    image = np.zeros((64, 64, 4), dtype=np.uint8)
    image[..., 0] = 200
    image[16:48, 16:48, 3] = 255
    path = tmp_path / "alpha.tif"
    tifffile.imwrite(path, image, tile=(32, 32), photometric="rgb", extrasamples=["unassalpha"])
    got = SlideReader(path, backend="tifffile").read_region(0, 0, 64, 64)
    assert (got[0, 0] == 255).all() and tuple(got[20, 20]) == (200, 0, 0)


def test_bad_inputs_raise_one_line_errors(tmp_path: Path, cmu: Path, coord_slide: Path) -> None:
    with pytest.raises(SlideNotFoundError, match="does not exist"):
        SlideReader(tmp_path / "nope.svs")
    assert issubclass(SlideNotFoundError, FileNotFoundError)
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n")
    with pytest.raises(SlideFormatError, match="neither openslide nor tifffile can read it") as err:
        _ = SlideReader(text).dimensions
    assert "\n" not in str(err.value)
    for src, keep in [(cmu, 600_000), (coord_slide, 1_200_000)]:  # IFD lost / tile data cut off
        truncated = tmp_path / f"truncated{src.suffix}"
        truncated.write_bytes(src.read_bytes()[:keep])
        with pytest.raises(SlideFormatError, match="truncated|complete slide file") as err:
            r = SlideReader(truncated)
            r.read_region(0, 0, *r.dimensions)
        assert "\n" not in str(err.value)


def test_tiled_slide_repeats_the_source(tmp_path: Path, cmu: Path) -> None:
    out = make_tiled_slide(cmu, tmp_path / "big.tif", repeat=(2, 1), compression="zlib", levels=2)
    handle = openslide.OpenSlide(str(out))
    assert handle.level_dimensions == ((4440, 2967), (2220, 1484))
    assert float(handle.properties["openslide.mpp-x"]) == pytest.approx(0.499)
    src, big = SlideReader(cmu), SlideReader(out)
    assert np.array_equal(big.read_region(2220 + 300, 500, 200, 100), src.read_region(300, 500, 200, 100))
    assert np.array_equal(big.read_region(2100, 40, 240, 30)[:, :120], src.read_region(2100, 40, 120, 30))
    assert np.array_equal(big.read_region(2100, 40, 240, 30)[:, 120:], src.read_region(0, 40, 120, 30))
    ref = src.read_region(0, 0, 200, 200, downsample=2).astype(int)
    exact = SlideReader(out, backend="tifffile").read_region(2220, 0, 200, 200, level=1).astype(int)
    assert np.array_equal(exact, ref)
    # OpenSlide places level 1 (2220 x 1484) at its estimated downsample 1.99966, i.e. a
    # fraction of a pixel off, and resamples: close, not identical.
    assert np.abs(big.read_region(2220, 0, 200, 200, level=1).astype(int) - ref).mean() < 3.0
