"""Tissue detection: the segmentation itself, mask queries, the cache, both real slides."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import pathseg_core  # noqa: F401
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tissue import TissueMask, TissueParams, default_cache_dir, detect_tissue, segment_tissue

PINK = (200, 120, 180)


def _disk_image(size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """White background, one pink disk with a white hole, one pink speck; returns (rgb, disk mask)."""
    rgb = np.full((size, size, 3), 245, dtype=np.uint8)
    cv2.circle(rgb, (100, 100), 50, PINK, -1)
    disk = np.zeros((size, size), dtype=np.uint8)
    cv2.circle(disk, (100, 100), 50, 1, -1)
    cv2.circle(rgb, (100, 100), 6, (245, 245, 245), -1)  # a hole inside the tissue
    cv2.rectangle(rgb, (10, 10), (12, 12), PINK, -1)  # a 3x3 speck
    return rgb, disk.astype(bool)


def test_segment_tissue_finds_the_disk_drops_specks_and_fills_holes() -> None:
    rgb, disk = _disk_image()
    params = TissueParams(min_area_um2=0, min_area_px=50, closing_radius=1, opening_radius=1)
    mask, threshold = segment_tissue(rgb, params, mask_mpp=None)
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert iou > 0.97
    assert mask[100, 100]  # hole filled
    assert not mask[5:20, 5:20].any()  # speck removed
    assert threshold >= params.min_saturation
    # With fill_holes off the hole stays.
    no_fill, _ = segment_tissue(rgb, TissueParams(min_area_px=50, fill_holes=False), mask_mpp=None)
    assert not no_fill[100, 100]
    # Area threshold in µm²: at 8 µm/px the disk (~7850 px = 0.5 mm²) goes below 1 mm².
    assert not segment_tissue(rgb, TissueParams(min_area_um2=1e6), mask_mpp=8.0)[0].any()


def test_blank_slide_stays_blank() -> None:
    rgb = np.full((64, 64, 3), 240, dtype=np.uint8)
    rgb[8:40, 8:40] = (240, 232, 244)  # a faint tint of the glass: Otsu alone splits it
    params = TissueParams(min_area_um2=0)
    assert not segment_tissue(rgb, params, mask_mpp=8.0)[0].any()
    unfloored, _ = segment_tissue(rgb, TissueParams(min_area_um2=0, min_saturation=0), mask_mpp=8.0)
    assert unfloored.any()


def test_fraction_hand_computed() -> None:
    m = np.zeros((4, 4), dtype=bool)
    m[:2, :2] = True
    tm = TissueMask(m, slide_size=(400, 400), downsample=100.0, mpp=None, threshold=0.0)
    assert tm.scale == (100.0, 100.0)
    assert tm.fraction(0, 0, 200, 200) == 1.0
    assert tm.fraction(0, 0, 400, 400) == 0.25
    assert tm.fraction(-200, -200, 400, 400) == 0.25  # three quarters outside the slide
    assert tm.fraction(200, 200, 200, 200) == 0.0
    assert tm.area_fraction == 0.25
    assert np.allclose(tm.tissue_points(), [[50, 50], [150, 50], [50, 150], [150, 150]])


def test_cmu_mask_is_cached(data_root: Path, tmp_path: Path) -> None:
    reader = SlideReader(data_root / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs")
    first = detect_tissue(reader, cache_dir=tmp_path)
    assert not first.from_cache
    # 8 µm/px on a 0.499 µm/px slide: downsample 16.03 → 139 x 186 mask.
    assert first.mask.shape == (186, 139)
    assert first.mpp == pytest.approx(8.0)
    assert 0.2 < first.area_fraction < 0.6
    assert first.preview_path is not None and first.preview_path.is_file()
    preview = cv2.imread(str(first.preview_path))
    assert preview.shape == (*first.mask.shape, 3)
    second = detect_tissue(reader, cache_dir=tmp_path)
    assert second.from_cache
    assert np.array_equal(second.mask, first.mask) and second.threshold == first.threshold
    # Other parameters → another entry.
    assert not detect_tissue(reader, TissueParams(closing_radius=3), cache_dir=tmp_path).from_cache


def test_cache_key_follows_the_file(data_root: Path, tmp_path: Path) -> None:
    src = data_root / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs"
    copy = tmp_path / "slide.svs"
    copy.write_bytes(src.read_bytes())
    reader = SlideReader(copy)
    cache = tmp_path / "cache"
    detect_tissue(reader, cache_dir=cache)
    assert detect_tissue(reader, cache_dir=cache).from_cache
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the slide changed
    assert not detect_tissue(reader, cache_dir=cache).from_cache
    assert not detect_tissue(reader, cache_dir=cache, use_cache=False).from_cache


def test_tcga_without_mpp_uses_a_fixed_downsample(data_root: Path, tmp_path: Path) -> None:
    reader = SlideReader(data_root / "wsi" / "tcga_cr_7395" / "tcga-cr-7395-01a-01-ts1.svs")
    tm = detect_tissue(reader, cache_dir=tmp_path)
    assert tm.mpp is None and tm.downsample == 16.0
    assert tm.mask.shape == (223, 278)  # ceil(3567 / 16), ceil(4443 / 16)
    assert 0.4 < tm.area_fraction < 0.85
    assert detect_tissue(reader, cache_dir=tmp_path).from_cache


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATHSEG_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tissue"
    monkeypatch.delenv("PATHSEG_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "pathseg" / "tissue"
