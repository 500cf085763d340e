"""Strip-wise resampled reads (``SlideReader.max_read_pixels``) against the one-shot read.

A reader with a tiny ``max_read_pixels`` reads big level boxes in horizontal strips; one
with a huge threshold reads them whole. Integer factors must match exactly, other factors
within the documented 1 grey level (OpenCV 5.0 gives 0 here too, but only 1 is promised).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

import pathseg_core  # noqa: F401  (arms the torchvision fix before anything else)
from pathseg_core.data.wsi.reader import MAX_READ_PIXELS, SlideReader, _area_columns, _area_table
from pathseg_core.data.wsi.tissue import TissueParams, detect_tissue
from pathseg_core.testing.fixtures import make_tiled_slide, write_pyramid_tiff

WHOLE = 1 << 40  # threshold no box reaches: the one-shot reference
TINY = 20_000  # a few level rows per strip on these slides


@pytest.fixture(scope="module")
def cmu(data_root: Path) -> Path:
    return data_root / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def noise_slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Lossless single-level and 3-level slides of uniform noise: any misplaced row shows."""
    folder = tmp_path_factory.mktemp("noise")
    image = np.random.default_rng(7).integers(0, 256, (1100, 1500, 3), dtype=np.uint8)
    return {
        "single": write_pyramid_tiff(folder / "single.tif", image, mpp=0.5, levels=1, compression="zlib"),
        "pyramid": write_pyramid_tiff(folder / "pyramid.tif", image, mpp=0.5, levels=3, compression="zlib"),
    }


@pytest.fixture(scope="module")
def tiled_cmu(cmu: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CMU repeated 2 × 1 into a 2-level pyramid TIFF (4440 × 2967 at level 0)."""
    return make_tiled_slide(cmu, tmp_path_factory.mktemp("tiled") / "big.tif", repeat=(2, 1), levels=2)


def _pair(path: Path, threshold: int = TINY) -> tuple[SlideReader, SlideReader]:
    return SlideReader(path, max_read_pixels=WHOLE), SlideReader(path, max_read_pixels=threshold)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _record_reads(reader: SlideReader, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """``(w, h)`` of every backend read of ``reader`` from now on."""
    backend = reader._handle()
    calls: list[tuple[int, int]] = []
    inner = backend.read

    def read(level: int, x: int, y: int, w: int, h: int, fill: int) -> np.ndarray:
        calls.append((w, h))
        return inner(level, x, y, w, h, fill)

    monkeypatch.setattr(backend, "read", read)
    return calls


# ------------------------------------------------------------------ the weight tables
@pytest.mark.parametrize(
    ("src", "dst"),
    [((300, 400), (37, 51)), ((320, 400), (20, 51)), ((300, 400), (37, 50)), ((999, 777), (95, 74)), ((64, 9), (3, 9))],
)
def test_area_table_reproduces_cv2_inter_area(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Columns then rows with the tables (float32, OpenCV's order) give cv2.resize's pixels."""
    image = np.random.default_rng(0).integers(0, 256, (*src, 3), dtype=np.uint8)
    ref = cv2.resize(image, dst[::-1], interpolation=cv2.INTER_AREA)
    cols = _area_columns(image, dst[1])
    index, weight = _area_table(src[0], dst[0])
    acc = cols[index[:, 0]] * weight[:, 0, None, None]
    for e in range(1, index.shape[1]):
        acc += cols[index[:, e]] * weight[:, e, None, None]
    assert _diff(np.clip(np.rint(acc), 0, 255).astype(np.uint8), ref).max() <= 1
    # Each output sample's weights cover its interval: they sum to 1.
    assert np.allclose(weight.sum(axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------ strips vs one shot
@pytest.mark.parametrize("ds", [2, 3, 4, 16, 32])
def test_integer_factors_equal_one_shot_on_cmu(cmu: Path, ds: int) -> None:
    whole, strips = _pair(cmu)
    assert strips.level_count == 1
    assert np.array_equal(strips.read_thumbnail(ds), whole.read_thumbnail(ds))
    box = (301, 517, 4000 // ds, 2400 // ds)  # inside; reaches the bottom edge at small ds
    assert np.array_equal(strips.read_scaled(*box, ds), whole.read_scaled(*box, ds))


@pytest.mark.parametrize("name", ["single", "pyramid"])
@pytest.mark.parametrize("ds", [2, 3, 5, 8])
def test_integer_factors_equal_one_shot_on_noise(noise_slides: dict[str, Path], name: str, ds: int) -> None:
    whole, strips = _pair(noise_slides[name], threshold=5_000)
    assert np.array_equal(strips.read_thumbnail(ds), whole.read_thumbnail(ds))
    # Level 1 (ds 2) then scales by ds / 2, an integer for ds 8 only on the pyramid.
    box = (13, 29, 1200 // ds, 900 // ds)
    assert np.array_equal(strips.read_scaled(*box, ds), whole.read_scaled(*box, ds))


@pytest.mark.parametrize("name", ["single", "pyramid"])
@pytest.mark.parametrize("ds", [1.5, 2.5, 3.3, 5.3, 10.5, 7.77])
def test_non_integer_factors_within_one_grey_level(noise_slides: dict[str, Path], name: str, ds: float) -> None:
    whole, strips = _pair(noise_slides[name], threshold=5_000)
    for a, b in [
        (strips.read_thumbnail(ds), whole.read_thumbnail(ds)),
        (strips.read_scaled(40.5, 7, 900 // 3, 700 // 3, ds), whole.read_scaled(40.5, 7, 900 // 3, 700 // 3, ds)),
    ]:
        d = _diff(a, b)
        assert d.max() <= 1
        assert (d > 0).mean() < 1e-3  # rounding ties only, not a shifted mapping


@pytest.mark.parametrize(("ds", "w", "h"), [(3.02, 20, 100), (3.02, 100, 20), (2.4, 1, 90), (10.5, 212, 283)])
def test_mixed_integer_and_fractional_axes(noise_slides: dict[str, Path], ds: float, w: int, h: int) -> None:
    """One axis an exact integer factor, the other not (cv2 would use a different path per axis)."""
    whole, strips = _pair(noise_slides["single"], threshold=300)
    d = _diff(strips.read_scaled(50, 60, w, h, ds), whole.read_scaled(50, 60, w, h, ds))
    assert d.max() <= 1 and (d > 0).mean() < 1e-3


@pytest.mark.parametrize("ds", [4, 10.5])
def test_generated_pyramid_matches(tiled_cmu: Path, ds: float) -> None:
    """Level 1 (ds 2) resampled by 2 or 5.25, through tifffile (exact level pixels)."""
    whole, strips = _pair(tiled_cmu)
    whole.backend_name = strips.backend_name = "tifffile"
    assert strips.level_count == 2 and strips.best_level(ds) == 1
    d = _diff(strips.read_thumbnail(ds), whole.read_thumbnail(ds))
    assert d.max() <= (0 if ds == 4 else 1)
    # OpenSlide places this level at its estimated downsample 1.99966 and resamples each
    # read by a fraction of a pixel that depends on where the read starts, so strips and
    # the one-shot read differ by that sub-pixel shift there: close, not equal.
    whole, strips = _pair(tiled_cmu)
    assert strips.info.backend == "openslide"
    assert _diff(strips.read_thumbnail(ds), whole.read_thumbnail(ds)).mean() < 2.0  # measured 0.82 / 0.37


# ------------------------------------------------------------------ outside the slide
@pytest.mark.parametrize("ds", [4, 6.5])
def test_regions_partly_or_wholly_outside(cmu: Path, ds: float) -> None:
    whole, strips = _pair(cmu)
    strips.fill = whole.fill = 200
    width, height = strips.dimensions
    boxes = [
        (-350.0, -420.0, 300, 260),  # top-left corner
        (width - 500.0, height - 300.0, 240, 200),  # bottom-right corner
        (-100.0, 900.0, int(width / ds) + 60, 50),  # wider than the slide
        (width + 50.0, 10.0, 80, 400),  # wholly outside
    ]
    for box in boxes:
        a, b = strips.read_scaled(*box, ds), whole.read_scaled(*box, ds)
        assert _diff(a, b).max() <= (0 if ds == 4 else 1)
    outside = strips.read_scaled(width + 50.0, 10.0, 80, 400, ds)
    assert (outside == 200).all()
    corner = strips.read_scaled(-350.0, -420.0, 300, 260, ds)
    assert (corner[: int(420 / ds) - 1] == 200).all() and (corner[:, : int(350 / ds) - 1] == 200).all()
    assert (corner[-5:, -5:] != 200).any()  # slide pixels, not fill


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("ds", [16, 10.5])
def test_backend_reads_are_bounded_by_the_threshold(cmu: Path, ds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    threshold = 100_000
    reader = SlideReader(cmu, max_read_pixels=threshold)
    calls = _record_reads(reader, monkeypatch)
    thumb = reader.read_thumbnail(ds)
    width, height = reader.dimensions
    assert len(calls) >= height // (threshold // width)
    assert max(w * h for w, h in calls) <= threshold
    assert sum(h for _, h in calls) >= height  # every level row was read
    assert all(w == width for w, _ in calls)  # the box spans the slide (its right edge is padding)
    # The default threshold (2 Mpx) reads this 6.6 Mpx slide in a few strips too.
    default = SlideReader(cmu)
    assert default.max_read_pixels == MAX_READ_PIXELS
    strips = _record_reads(default, monkeypatch)
    assert _diff(default.read_thumbnail(ds), thumb).max() <= (0 if ds == 16 else 1)
    assert 1 < len(strips) <= 8 and max(w * h for w, h in strips) <= MAX_READ_PIXELS


def test_a_row_wider_than_the_threshold_still_reads(cmu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest strip is one output row's level rows."""
    reader = SlideReader(cmu, max_read_pixels=1)
    calls = _record_reads(reader, monkeypatch)
    thumb = reader.read_thumbnail(8)
    assert np.array_equal(thumb, SlideReader(cmu, max_read_pixels=WHOLE).read_thumbnail(8))
    assert {h for _, h in calls} <= {8, 7}  # 8 level rows per output row; 2967 = 370·8 + 7 (bottom padded)


def test_thumbnail_peak_memory_is_a_strip_not_the_slide(cmu: Path) -> None:
    reader = SlideReader(cmu, max_read_pixels=100_000)
    reader.read_region(0, 0, 8, 8)  # open the file outside the measurement
    width, height = reader.dimensions
    tracemalloc.start()
    try:
        reader.read_thumbnail(16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < width * height * 3 / 4  # a quarter of level 0 as RGB (the one-shot read holds ~4.5×)


# ------------------------------------------------------------------ tissue detection
def test_detect_tissue_is_unchanged_by_strips(cmu: Path) -> None:
    params = TissueParams()
    ref = detect_tissue(SlideReader(cmu, max_read_pixels=WHOLE), params, use_cache=False)
    got = detect_tissue(SlideReader(cmu, max_read_pixels=TINY), params, use_cache=False)
    assert ref.mask.any() and not ref.mask.all()
    assert np.array_equal(got.mask, ref.mask)
    assert got.threshold == ref.threshold
