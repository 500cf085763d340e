"""QuPath GeoJSON reading / validation / rasterisation, label masks, annotations as prompts, the BCSS fixture."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile
from shapely.geometry import MultiPolygon, Polygon, box

import pathseg_core  # noqa: F401
from pathseg_core.data.class_map import load_class_map
from pathseg_core.data.wsi.annotations import Annotation, AnnotationIndex, parse_features, read_geojson, write_geojson
from pathseg_core.data.wsi.errors import AnnotationError, AnnotationNotFoundError
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.label_mask import LabelMaskReader
from pathseg_core.data.wsi.labels import GeoJSONLabels, read_code_names
from pathseg_core.data.wsi.prompts import annotation_prompts, stack_prompts
from pathseg_core.data.wsi.raster import fill_rings, rasterize, vectorize
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.testing.fixtures import make_bcss_slide


@pytest.fixture(scope="module")
def bcss(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_bcss_slide(tmp_path_factory.mktemp("bcss"))


@pytest.fixture(scope="module")
def bcss_names(data_root: Path) -> dict[int, str]:
    return read_code_names(data_root / "seg" / "bcss" / "class_names.json")


def _feature(geometry: dict, cls: object = "tumor", object_type: str | None = "annotation", **extra: object) -> dict:
    props: dict[str, object] = dict(extra)
    if object_type is not None:
        props["objectType"] = object_type
    if isinstance(cls, str):
        props["classification"] = {"name": cls, "color": [200, 0, 0]}
    elif cls is not None:
        props["classification"] = cls
    return {"type": "Feature", "geometry": geometry, "properties": props}


SQUARE_WITH_HOLE = {
    "type": "Polygon",
    "coordinates": [
        [[2, 2], [12, 2], [12, 12], [2, 12], [2, 2]],
        [[5, 5], [9, 5], [9, 9], [5, 9], [5, 5]],
    ],
}


# ---------------------------------------------------------------------- the BCSS fixture
def test_bcss_fixture_opens_in_openslide(bcss: tuple[Path, Path, Path]) -> None:
    slide, mask, geojson = bcss
    handle = openslide.OpenSlide(str(slide))
    assert handle.properties["openslide.vendor"] == "generic-tiff"
    assert handle.dimensions == (3072, 1024)
    assert handle.level_dimensions == ((3072, 1024), (1536, 512), (768, 256))
    assert float(handle.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    reader = SlideReader(slide)
    assert reader.mpp == pytest.approx(0.25)
    assert tifffile.imread(mask).shape == (1024, 3072)
    assert geojson.suffix == ".geojson"


def test_bcss_fixture_pixels_are_the_tiles(bcss: tuple[Path, Path, Path], data_root: Path) -> None:
    reader = SlideReader(bcss[0])
    tile = cv2.imread(str(next((data_root / "seg" / "bcss" / "images").glob("*-1536.png"))))[..., ::-1]
    assert np.array_equal(reader.read_region(1536, 0, 1024, 1024), tile)


def test_mask_geojson_raster_round_trip(bcss: tuple[Path, Path, Path], bcss_names: dict[int, str]) -> None:
    _, mask_path, geojson = bcss
    mask = tifffile.imread(mask_path)
    codes = {name: code for code, name in bcss_names.items()}
    annotations = read_geojson(geojson, class_map=codes, slide_size=(3072, 1024))
    assert {a.class_name for a in annotations} == {bcss_names[int(v)] for v in np.unique(mask)}
    raster = rasterize(annotations, PatchFrame(0.0, 0.0, 1.0, 3072, 1024))
    for value in np.unique(mask):
        a, b = raster == value, mask == value
        assert (a & b).sum() / (a | b).sum() > 0.98
    assert np.array_equal(raster, mask)  # pixel-edge polygons: exact


def test_geojson_labels_agree_with_label_mask_at_any_frame(bcss: tuple[Path, Path, Path], bcss_names: dict) -> None:
    _, mask_path, geojson = bcss
    class_map = load_class_map("bcss_5class")
    from_geojson = GeoJSONLabels(geojson, class_map, slide_size=(3072, 1024), code_names=bcss_names)
    from_mask = LabelMaskReader(mask_path, class_map=class_map)
    for frame in [
        PatchFrame(0.0, 0.0, 1.0, 512, 512),
        PatchFrame(1000.0, 300.0, 2.0, 256, 256),
        PatchFrame(2900.0, -100.0, 4.0, 128, 128),  # over the top-right corner
        PatchFrame(333.5, 77.25, 3.0, 100, 90),
    ]:
        a, b = from_geojson.read(frame), from_mask.read(frame)
        assert np.array_equal(a, b)
    edge = from_mask.read(PatchFrame(2900.0, -100.0, 4.0, 128, 128))
    assert (edge[:25] == 255).all() and (edge[:, 43:] == 255).all()  # outside → ignore_index


# ---------------------------------------------------------------------- layouts and classes
def test_qupath_layouts_and_classification_forms() -> None:
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    single = _feature(poly)
    as_collection = {"type": "FeatureCollection", "features": [single]}
    for data in (single, [single], as_collection):
        (a,) = parse_features(data, class_map={"tumor": 3})
        assert a.class_name == "tumor" and a.class_id == 3 and a.object_type == "annotation"
    legacy = _feature(poly, cls="Stroma", object_type=None)
    legacy["id"] = "PathDetectionObject"
    (a,) = parse_features([legacy])
    assert a.class_name == "Stroma" and a.object_type == "detection" and a.class_id is None
    unclassified = _feature(poly, cls=None)
    assert parse_features([unclassified])[0].class_name is None


def test_object_type_filter_and_unknown_classes() -> None:
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    data = [_feature(poly, "tumor"), _feature(poly, "stroma", object_type="detection"), _feature(poly, "fat")]
    assert len(parse_features(data, object_types=("annotation",))) == 2
    with pytest.raises(
        AnnotationError, match=r"feature 2 of <geojson> has class 'fat', not in the class map \(stroma, tumor\)"
    ):
        parse_features(data, class_map={"tumor": 1, "stroma": 2})
    kept = parse_features(data, class_map={"tumor": 1, "stroma": 2}, on_unknown_class="skip")
    assert [a.class_id for a in kept] == [1, 2]


def test_polygon_with_hole_and_multipolygon_rasterise_hand_counted() -> None:
    (a,) = parse_features([_feature(SQUARE_WITH_HOLE)], class_map={"tumor": 1})
    assert isinstance(a.geometry, Polygon)
    labels = rasterize([a], PatchFrame(0.0, 0.0, 1.0, 16, 16))
    assert (labels == 1).sum() == 100 - 16
    assert labels[7, 7] == 0 and labels[2, 2] == 1 and labels[12, 12] == 0
    multi = {
        "type": "MultiPolygon",
        "coordinates": [SQUARE_WITH_HOLE["coordinates"], [[[20, 0], [24, 0], [24, 2], [20, 2], [20, 0]]]],
    }
    (m,) = parse_features([_feature(multi)], class_map={"tumor": 2})
    assert isinstance(m.geometry, MultiPolygon)
    labels = rasterize([m], PatchFrame(0.0, 0.0, 1.0, 32, 16))
    assert (labels == 2).sum() == 84 + 8
    # Half resolution: pixel (c, r) has its centre at level-0 (2c + 1, 2r + 1).
    half = rasterize([m], PatchFrame(0.0, 0.0, 2.0, 16, 8))
    assert half[1:6, 1:6].sum() == 2 * (25 - 4) and half[0, 10:12].tolist() == [2, 2]


def test_later_annotations_paint_over_earlier_ones() -> None:
    big = Annotation(box(0, 0, 10, 10), "a", 1)
    small = Annotation(box(2, 2, 4, 4), "b", 2)
    labels = rasterize([big, small], PatchFrame(0.0, 0.0, 1.0, 10, 10), fill=9)
    assert (labels == 2).sum() == 4 and (labels == 1).sum() == 96
    assert (rasterize([small, big], PatchFrame(0.0, 0.0, 1.0, 10, 10)) == 1).all()


def test_fill_rings_even_odd_and_edge_rule() -> None:
    ext = np.array([[2.0, 2.0], [12.0, 2.0], [12.0, 12.0], [2.0, 12.0]])
    hole = np.array([[5.0, 5.0], [9.0, 5.0], [9.0, 9.0], [5.0, 9.0]])
    assert fill_rings([ext, hole], (15, 15)).sum() == 84
    # Centres exactly on an edge: inside on the left / top edge, outside on the right / bottom.
    on_edges = np.array([[0.5, 0.5], [2.5, 0.5], [2.5, 2.5], [0.5, 2.5]])
    got = fill_rings([on_edges], (4, 4))
    assert got.sum() == 4 and got[0, 0] and got[1, 1] and not got[2, 2]


def test_vectorize_single_pixels_and_holes() -> None:
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[1, 1] = 3
    labels[4:10, 4:10] = 5
    labels[6:8, 6:8] = 0
    anns = vectorize(labels, PatchFrame(10.0, 20.0, 1.0, 12, 12), names={3: "dot", 5: "ring"})
    by_name = {a.class_name: a for a in anns}
    assert by_name["dot"].geometry.equals(box(11, 21, 12, 22))
    assert by_name["ring"].geometry.area == 36 - 4 and len(by_name["ring"].geometry.interiors) == 1
    assert np.array_equal(rasterize(anns, PatchFrame(10.0, 20.0, 1.0, 12, 12)), labels)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    anns = [
        Annotation(
            Polygon(*SQUARE_WITH_HOLE["coordinates"][:1], holes=SQUARE_WITH_HOLE["coordinates"][1:]), "tumor", 1
        ),
        Annotation(box(20, 20, 30, 25), "stroma", 2, object_type="detection"),
    ]
    path = write_geojson(anns, tmp_path / "out.geojson", colors={"tumor": (255, 0, 0)})
    data = json.loads(path.read_text())
    assert data["features"][0]["properties"]["classification"] == {"name": "tumor", "color": [255, 0, 0]}
    back = read_geojson(path, class_map={"tumor": 1, "stroma": 2}, slide_size=(100, 100))
    assert [(a.class_name, a.class_id, a.object_type) for a in back] == [
        ("tumor", 1, "annotation"),
        ("stroma", 2, "detection"),
    ]
    assert all(a.geometry.equals(b.geometry) for a, b in zip(anns, back))


def test_index_query() -> None:
    anns = [Annotation(box(0, 0, 10, 10), "a", 1), Annotation(box(100, 100, 110, 110), "b", 2)]
    index = AnnotationIndex(anns)
    assert [a.class_name for a in index.query((5, 5, 50, 50))] == ["a"]
    assert index.query((20, 20, 90, 90)) == []
    assert index.bounds == (0.0, 0.0, 110.0, 110.0)


# ---------------------------------------------------------------------- errors
def _write(tmp_path: Path, data: object, name: str = "a.geojson") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_bad_files_raise_one_line_errors(tmp_path: Path) -> None:
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]]]}
    cases = [
        ('{"type": "FeatureCollection", "features": [', r"is not valid JSON \(line 1, column 44: Expecting value"),
        ({"type": "Polygon", "coordinates": []}, "top-level type 'Polygon'; expected a FeatureCollection"),
        ([_feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]})], "geometry type 'LineString'; supported"),
        ([_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})], "malformed Polygon coordinates"),
        ([_feature({"type": "Polygon", "coordinates": [[[0, 0], ["a", 1], [1, 1], [0, 0]]]})], "malformed Polygon"),
        ([_feature(None)], "feature 0 of .* has no geometry"),  # type: ignore[arg-type]
        ([{"type": "Point", "coordinates": [0, 0]}], "item 0 of .* is a Point, not a GeoJSON Feature"),
        ([_feature({"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [10, 0], [0, 0]]]})], "zero area"),
    ]
    for data, message in cases:
        with pytest.raises(AnnotationError, match=message) as err:
            read_geojson(_write(tmp_path, data), slide_size=(5000, 5000))
        assert "\n" not in str(err.value)
    with pytest.raises(AnnotationNotFoundError, match="does not exist"):
        read_geojson(tmp_path / "missing.geojson")
    assert len(read_geojson(_write(tmp_path, [_feature(poly)]))) == 1


def test_coordinates_outside_or_in_a_wrong_frame(tmp_path: Path) -> None:
    def sq(x: float, y: float, s: float) -> dict:
        return _feature({"type": "Polygon", "coordinates": [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]]})

    slide = (4000, 3000)
    inside = [sq(100, 100, 500), sq(3000, 2000, 900)]
    assert len(read_geojson(_write(tmp_path, inside), slide_size=slide)) == 2
    with pytest.raises(AnnotationError, match=r"feature 1 of .* lies outside the 4000x3000 slide .*level-0 pixels"):
        read_geojson(_write(tmp_path, [sq(100, 100, 50), sq(3900, 2900, 300)]), slide_size=slide)
    with pytest.raises(
        AnnotationError, match=r"reach \(14000, 10000\), 3.5x beyond the 4000x3000 slide.*another image or resolution"
    ):
        read_geojson(
            _write(tmp_path, [sq(x * 4, y * 4, 2000) for x, y in [(100, 100), (3000, 2000)]]), slide_size=slide
        )
    # Exported at a downsampled level (÷64): everything sits in the top-left corner.
    with pytest.raises(AnnotationError, match=r"within the top-left 2% .*downsampled level or normalised"):
        read_geojson(_write(tmp_path, [sq(100 / 64, 100 / 64, 8), sq(3000 / 64, 2000 / 64, 14)]), slide_size=slide)
    # Within the border tolerance is fine.
    assert len(read_geojson(_write(tmp_path, [sq(-1, -1, 500)]), slide_size=slide)) == 1


def test_label_mask_reader_formats_alignment_and_errors(tmp_path: Path) -> None:
    mask = np.zeros((50, 80), dtype=np.uint8)
    mask[10:20, 20:40] = 2
    png = tmp_path / "mask.png"
    cv2.imwrite(str(png), mask)
    reader = LabelMaskReader(png, downsample=4.0)  # covers a 320 x 200 slide
    reader.check_alignment((320, 200))
    with pytest.raises(AnnotationError, match=r"covers 320x200 but the slide is 640x400; pass downsample≈8"):
        reader.check_alignment((640, 400))
    # Level-0 frame at downsample 2: output pixel c samples mask column floor((2c + 1) / 4).
    got = reader.read(PatchFrame(0.0, 0.0, 2.0, 160, 100))
    assert np.array_equal(got, np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))
    assert (reader.read(PatchFrame(-100.0, 0.0, 1.0, 50, 10)) == 0).all()
    rgb = tmp_path / "rgb.png"
    cv2.imwrite(str(rgb), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(AnnotationError, match="3 channels; expected one channel"):
        LabelMaskReader(rgb).read(PatchFrame(0.0, 0.0, 1.0, 2, 2))
    with pytest.raises(AnnotationNotFoundError):
        LabelMaskReader(tmp_path / "none.png")


# ---------------------------------------------------------------------- prompts
def test_annotations_as_prompts_in_patch_frame() -> None:
    anns = [
        Annotation(box(120, 220, 160, 300), "tumor", 1),  # a QuPath rectangle
        Annotation(Polygon([(90, 210), (130, 200), (110, 260)]), "stroma", 2),  # crosses the patch's left edge
        Annotation(box(1000, 1000, 1010, 1010), "tumor", 1),  # outside the patch
        parse_features([_feature({"type": "Point", "coordinates": [150, 250]}, "cell")])[0],
        parse_features([_feature({"type": "MultiPoint", "coordinates": [[104, 204], [500, 500]]}, "cell")])[0],
    ]
    frame = PatchFrame(100.0, 200.0, 2.0, 64, 64)
    prompts = annotation_prompts(anns, frame)
    assert prompts.boxes.tolist() == [[10.0, 10.0, 30.0, 50.0], [0.0, 0.0, 15.0, 30.0]]
    assert prompts.box_classes.tolist() == [1, 2]
    assert prompts.points.tolist() == [[25.0, 25.0], [2.0, 2.0]]
    assert prompts.point_classes.tolist() == [-1, -1]
    empty = annotation_prompts([], frame)
    boxes = stack_prompts([prompts, empty], kind="boxes")
    assert boxes.boxes.shape == (2, 2, 4) and boxes.valid.tolist() == [[True, True], [False, False]]
    boxes.validate(batch_size=2, image_size=(64, 64))
    points = stack_prompts([prompts, empty], kind="points")
    assert points.points.shape == (2, 2, 1, 2) and points.point_labels[:, :, 0].tolist() == [[1, 1], [-1, -1]]
    points.validate(batch_size=2, image_size=(64, 64))
