"""Units of ``pathseg segment``'s output side: blending, the pyramidal TIFF, GeoJSON, overlay."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
import tifffile

from pathseg_core.data.wsi.annotations import Annotation, parse_features
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.raster import rasterize, vectorize
from pathseg_core.inference.blend import BandAccumulator, BlendError, blend_window, ramp
from pathseg_core.inference.overlay import ThumbnailSampler, thumbnail_shape
from pathseg_core.inference.tiff_writer import PyramidalMaskWriter, TiffWriteError, mode_downsample2, pyramid_shapes
from pathseg_core.inference.vectorize import BandVectorizer, GeoJSONWriter, region_feature, vectorize_bands


def _blobs(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A class-id mask with blobs of classes 1 and 2, holes and thin lines."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 3)
    mask = (noise > 0.5).astype(np.uint8)
    mask[noise > 0.53] = 2
    mask[5, 2:60] = 1  # one-pixel line
    mask[:, -1] = 2  # touches the right border
    return mask


# ------------------------------------------------------------------ blending
def test_ramp_hand_values_and_partition_of_unity() -> None:
    np.testing.assert_allclose(ramp(8, 4), [0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125])
    np.testing.assert_array_equal(ramp(6, 0), np.ones(6))
    r = ramp(16, 4)
    # neighbours at stride 12: the 4 shared pixels' weights sum to exactly 1
    np.testing.assert_allclose(r[12:] + r[:4], np.ones(4))
    w = blend_window(16, 4)
    assert w.shape == (16, 16) and w[0, 0] == pytest.approx(0.125**2) and w[8, 8] == 1.0
    with pytest.raises(BlendError, match="overlap"):
        ramp(8, 5)


def test_accumulator_sum_blends_seamlessly_and_finishes_rows() -> None:
    size, overlap, stride = 8, 2, 6
    acc = BandAccumulator(width=14, channels=2)
    w = blend_window(size, overlap)
    # two tiles side by side with the same probabilities: the blended sum is w's partition
    p = np.zeros((2, size, size), np.float32)
    p[1] = 0.75
    p[0] = 0.25
    for x in (0, stride):
        acc.add(p, 0, x, weight=w)
    row = acc.data[1, 4]  # an interior row: weight 1 in y
    np.testing.assert_allclose(row[:14], np.concatenate([ramp(8, 2)[:6], np.ones(2), ramp(8, 2)[2:]]) * 0.75)
    ids = acc.finish(6)
    assert ids.shape == (6, 14) and (ids == 1).all()
    assert acc.top == 6 and acc.data.shape == (2, 2, 14)
    with pytest.raises(BlendError, match="above the first open row"):
        acc.add(p, 0, 0)
    with pytest.raises(BlendError, match="channels"):
        acc.add(p[:1], 6, 0)


def test_accumulator_max_mode_threshold_and_state_roundtrip() -> None:
    acc = BandAccumulator(width=5, channels=3, reduce="max", background=0.5)
    mask = np.zeros((1, 2, 3), np.float32)
    mask[0, :, 1:] = 0.9
    acc.add(mask, 1, 3, channel=2)  # partly outside on the right
    weak = np.full((1, 1, 5), 0.4, np.float32)
    acc.add(weak, 2, 0, channel=1)  # below the threshold: stays background
    state = acc.state()
    again = BandAccumulator.from_state(state, 5, 3, "max", 0.5)
    ids = again.finish(4)
    expected = np.zeros((4, 5), np.uint8)
    expected[1:3, 4] = 2
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(acc.finish(4), expected)
    with pytest.raises(BlendError, match="shape"):
        BandAccumulator.from_state(state, 6, 3)


# ------------------------------------------------------------------ pyramid TIFF
def test_mode_downsample_hand_examples() -> None:
    a = np.array([[1, 1, 0, 3, 7], [2, 0, 3, 3, 7]], np.uint8)
    # blocks: {1,1,2,0} → 1; {0,3,3,3} → 3; odd last column repeated {7,7,7,7} → 7
    np.testing.assert_array_equal(mode_downsample2(a), [[1, 3, 7]])
    tie = np.array([[1, 2], [2, 1]], np.uint8)
    assert mode_downsample2(tie)[0, 0] == 2  # ties go to the highest id
    assert mode_downsample2(np.array([[0, 0], [5, 6]], np.uint8))[0, 0] == 0
    with pytest.raises(TiffWriteError):
        mode_downsample2(np.zeros((3, 4), np.uint8))
    assert pyramid_shapes((1300, 1100), 512) == [(1300, 1100), (650, 550), (325, 275)]
    assert pyramid_shapes((100, 80), 512) == [(100, 80)]


def _reference_levels(mask: np.ndarray, n: int) -> list[np.ndarray]:
    levels = [mask]
    for _ in range(n):
        a = levels[-1]
        if a.shape[0] % 2:
            a = np.concatenate([a, a[-1:]])
        levels.append(mode_downsample2(a))
    return levels


def test_pyramid_writer_streams_chunks_exactly(tmp_path) -> None:
    import openslide

    mask = _blobs((1100, 700), seed=1)
    writer = PyramidalMaskWriter(tmp_path / "m.tiff", mask.shape, mpp=0.75, spill_dir=tmp_path / "spill", tile=256)
    cuts = [0, 37, 300, 301, 555, 1024, 1100]  # irregular chunk heights, like row bands
    writer.write(mask[a:b] for a, b in zip(cuts, cuts[1:]))
    ref = _reference_levels(mask, 3)
    with tifffile.TiffFile(tmp_path / "m.tiff") as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(1100, 700), (550, 350), (275, 175), (138, 88)]
        for got, want in zip(levels, ref):
            np.testing.assert_array_equal(got.asarray(), want)
        page = tif.pages[0]
        assert page.compression == 8 and page.is_tiled and page.tilewidth == 256 and page.dtype == np.uint8
        names = {t.name for t in page.tags}
        assert "DateTime" not in names and "Software" not in names and "ImageDescription" not in names
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
    np.testing.assert_array_equal(writer.level(3), ref[3])
    with openslide.OpenSlide(str(tmp_path / "m.tiff")) as slide:
        assert slide.dimensions == (700, 1100)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.75, rel=1e-6)
        region = np.asarray(slide.read_region((0, 0), 0, (700, 1100)))[..., 0]
        np.testing.assert_array_equal(region, mask)
        # the whole pyramid is visible to OpenSlide (levels are top-level pages, not SubIFDs)
        assert slide.level_dimensions == ((700, 1100), (350, 550), (175, 275), (88, 138))
        np.testing.assert_array_equal(np.asarray(slide.read_region((0, 0), 2, (175, 275)))[..., 0], ref[2])
    # the same chunks give the same bytes
    again = PyramidalMaskWriter(tmp_path / "n.tiff", mask.shape, mpp=0.75, spill_dir=tmp_path / "spill2", tile=256)
    again.write(iter([mask[:700], mask[700:]]))
    assert (tmp_path / "m.tiff").read_bytes() == (tmp_path / "n.tiff").read_bytes()


def test_pyramid_writer_rejects_wrong_chunks(tmp_path) -> None:
    w = PyramidalMaskWriter(tmp_path / "a.tiff", (40, 30), 1.0, tmp_path / "s", tile=16)
    with pytest.raises(TiffWriteError, match="ended after 20 of 40"):
        w.write(iter([np.zeros((20, 30), np.uint8)]))
    with pytest.raises(TiffWriteError, match="expected \\[rows, 30\\]"):
        w.write(iter([np.zeros((20, 31), np.uint8)]))
    with pytest.raises(TiffWriteError, match="exceed"):
        w.write(iter([np.zeros((41, 30), np.uint8)]))


# ------------------------------------------------------------------ vectorising
def _noisy(shape: tuple[int, int], seed: int, classes: int = 4) -> np.ndarray:
    """Per-pixel noise of ``classes`` ids (diagonal contacts, holes touching their shell) over smooth blobs."""
    import cv2

    rng = np.random.default_rng(seed)
    mask = rng.integers(0, classes, shape).astype(np.uint8)
    smooth = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 2)
    mask[smooth > 0.5] = 1 + (smooth[smooth > 0.5] > 0.53)
    mask[smooth < 0.47] = 0
    return mask


def _seam_cases() -> np.ndarray:
    """16 × 20 mask laid out on 4 × 4 tiles (``chunk_cols=4``, bands of 4 rows)."""
    m = np.zeros((16, 20), np.uint8)
    m[0, :] = 1  # spans every chunk, and with its teeth every band
    m[:, [1, 13, 18]] = 1
    m[5:11, 5:11] = 2  # a ring centred on the tile corner (8, 8): its hole spans both seams
    m[6:10, 6:10] = 0
    m[3, 3] = m[4, 4] = 3  # diagonal-only contact at the tile corner (4, 4): two regions
    m[3, 12] = m[4, 11] = 3  # and across the corner (12, 4) the other way
    m[7:9, 3:5] = 3  # one 2 × 2 region with a pixel in each tile around the corner (4, 8)
    # a C whose hole touches the outside diagonally, cut by the seam x = 16: a hole
    # touching its shell at one corner, where the unchunked ring touches itself
    m[12:15, 14:17] = 4
    m[13, 15] = m[14, 16] = 0
    m[15, 17] = 4  # diagonal to (14, 16)'s neighbour only: a separate region
    return m


def _vertices(poly: shapely.Polygon) -> int:
    return sum(len(r.coords) - 1 for r in (poly.exterior, *poly.interiors))


def _assert_matches_whole_mask(mask: np.ndarray, regions: list, num_classes: int) -> None:
    """Regions equal :func:`vectorize` of the whole mask, region by region, and rasterise back to it."""
    frame = PatchFrame(0.0, 0.0, 1.0, mask.shape[1], mask.shape[0])
    whole = vectorize(mask, frame)
    key = lambda p: (*p.bounds, p.area)  # noqa: E731
    for c in range(1, num_classes):
        want = sorted((a.geometry for a in whole if a.class_id == c), key=key)
        got = sorted((p for k, p in regions if k == c), key=key)
        assert len(got) == len(want)  # merged across every seam, diagonal contacts kept apart
        for g, w in zip(got, want):
            # (traced rings may touch themselves, which GEOS predicates call invalid)
            assert shapely.equals(shapely.make_valid(g), shapely.make_valid(w))
            # no vertex left where a seam cut a straight edge: as many as whole-mask tracing gives
            assert _vertices(g) == _vertices(w)
    back = rasterize([Annotation(p, class_id=c) for c, p in regions], frame, dtype=np.uint8)
    np.testing.assert_array_equal(back, mask)


def _bands(mask: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return [mask[a:b] for a, b in zip(cuts, cuts[1:])]


@pytest.mark.parametrize("chunk_cols", [3, 16, 2048])
@pytest.mark.parametrize("cuts", [[0, 200], [0, 37, 38, 90, 151, 200], list(range(0, 201, 7)) + [200]])
def test_band_vectorizer_matches_whole_mask_and_rasterizes_back(cuts, chunk_cols) -> None:
    mask = _blobs((200, 260), seed=2)
    _assert_matches_whole_mask(mask, vectorize_bands(_bands(mask, cuts), num_classes=3, chunk_cols=chunk_cols), 3)


@pytest.mark.parametrize("chunk_cols", [1, 3, 7, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_vectorizer_on_noisy_multiclass_masks(seed, chunk_cols) -> None:
    mask = _noisy((45, 61), seed)
    cuts = [0, 1, 8, 9, 23, 45] if seed else [0, 45]
    regions = vectorize_bands(_bands(mask, cuts), num_classes=4, chunk_cols=chunk_cols)
    _assert_matches_whole_mask(mask, regions, 4)
    again = vectorize_bands(_bands(mask, cuts), num_classes=4, chunk_cols=chunk_cols)
    names, colors = ["bg", "a", "b", "c"], [[0, 0, 0]] * 4
    assert [region_feature(r, names, colors, 1.0) for r in regions] == [
        region_feature(r, names, colors, 1.0) for r in again
    ]


@pytest.mark.parametrize(("chunk_cols", "cuts"), [(4, list(range(0, 17, 4))), (4, [0, 16]), (3, [0, 5, 8, 16])])
def test_chunked_vectorizer_at_tile_corners_and_seams(chunk_cols, cuts) -> None:
    mask = _seam_cases()
    regions = vectorize_bands(_bands(mask, cuts), num_classes=5, chunk_cols=chunk_cols)
    _assert_matches_whole_mask(mask, regions, 5)
    by_class = {c: [p for k, p in regions if k == c] for c in range(1, 5)}
    assert len(by_class[1]) == 1 and by_class[1][0].bounds == (0.0, 0.0, 20.0, 16.0)
    assert len(by_class[2]) == 1 and len(by_class[2][0].interiors) == 1
    assert by_class[2][0].interiors[0].bounds == (6.0, 6.0, 10.0, 10.0)
    assert sorted(p.area for p in by_class[3]) == [1.0, 1.0, 1.0, 1.0, 4.0]
    assert sorted(p.area for p in by_class[4]) == [1.0, 7.0]


def test_regions_are_handed_out_as_soon_as_they_close() -> None:
    mask = np.zeros((9, 8), np.uint8)
    mask[0:2, 1:3] = 1  # closes with band 0
    mask[2:7, 2:7] = 2  # spans bands 0..2 and both chunks
    mask[3:6, 3:6] = 0
    v = BandVectorizer(3, chunk_cols=4)
    assert [(c, p.bounds) for c, p in v.add_band(mask[:3])] == [(1, (1.0, 0.0, 3.0, 2.0))]
    assert v.add_band(mask[3:6]) == []  # the class-2 region is still open at row 6
    [(c, ring)] = v.add_band(mask[6:])  # its last row is 6: no piece touches row 9
    assert v.finish() == []
    assert c == 2 and ring.equals(shapely.box(2, 2, 7, 7).difference(shapely.box(3, 3, 6, 6)))
    assert _vertices(ring) == 8  # seams at x = 4 and y = 3, 6 left no vertex behind
    with pytest.raises(ValueError, match=r"expected a band \[rows, 8\]"):
        v.add_band(np.zeros((2, 9), np.uint8))
    with pytest.raises(ValueError, match="chunk_cols"):
        BandVectorizer(3, chunk_cols=0)


def test_geojson_is_qupath_shaped_and_scaled(tmp_path) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[6:9, 1:4] = 2
    mask[1:3, 5:11] = 1
    regions = vectorize_bands([mask[:5], mask[5:]], 3)
    with GeoJSONWriter(tmp_path / "x.geojson", ["bg", "a", "b"], [[0, 0, 0], [1, 2, 3], [4, 5, 6]], ds=2.0) as gj:
        gj.write(regions)
    fc = json.loads((tmp_path / "x.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and gj.count == 2
    assert [f["properties"]["classification"] for f in fc["features"]] == [
        {"name": "a", "color": [1, 2, 3]},
        {"name": "b", "color": [4, 5, 6]},
    ]
    assert all(f["properties"]["objectType"] == "annotation" for f in fc["features"])
    a = shapely.geometry.shape(fc["features"][0]["geometry"])
    # class 1 covers columns 5..10, rows 1..2 → the level-0 box 10..22 × 2..6 (pixel edges × ds)
    assert a.bounds == (10.0, 2.0, 22.0, 6.0)
    assert a.area == pytest.approx(12 * 2 * 2)
    assert [p.class_name for p in parse_features(fc)] == ["a", "b"]
    assert region_feature(regions[0], ["bg", "a", "b"], [[0] * 3] * 3, ds=2.0) == {
        **fc["features"][0],
        "properties": {"objectType": "annotation", "classification": {"name": "a", "color": [0, 0, 0]}},
    }


# ------------------------------------------------------------------ overlay
def test_thumbnail_sampler_picks_nearest_rows_band_by_band() -> None:
    ds, shape = thumbnail_shape((1000, 600), max_side=100)
    assert ds == 10.0 and shape == (60, 100)
    mask = np.arange(40 * 50, dtype=np.int64).reshape(40, 50) % 7
    sampler = ThumbnailSampler((40, 50), (10, 13), scale=4.0)
    for a, b in [(0, 9), (9, 30), (30, 40)]:
        sampler.add_band(mask[a:b].astype(np.uint8))
    rows = np.minimum((np.arange(10) * 4 + 2), 39)
    cols = np.minimum((np.arange(13) * 4 + 2), 49)
    np.testing.assert_array_equal(sampler.mask, mask[rows][:, cols])
