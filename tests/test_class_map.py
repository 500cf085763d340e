import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pathseg_core  # noqa: F401 - arms the torchvision fix first
from pathseg_core.data.class_map import ClassMap, ClassMapError, load_class_map, shipped_names
from pathseg_core.data.paths import data_root
from pathseg_core.data.tile_io import read_label_mask

OCDC = data_root() / "seg" / "ocdc"
BCSS = data_root() / "seg" / "bcss"
BCSS_TILE = "TCGA-A2-A3XT-DX1_xmin83566_ymin29931_MPP-0-0-0.png"


def write_map(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    return path


def test_merge_ignore_and_dtype(tmp_path):
    cm = ClassMap.from_json(
        write_map(
            tmp_path, {"names": ["bg", "fg"], "map": {"0": 0, "3": 1, "10": 1}, "ignore": [7], "ignore_index": 255}
        )
    )
    mask = np.array([[0, 3, 10], [7, 0, 3]], dtype=np.uint8)
    out = cm.apply(mask)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 1, 1], [255, 0, 1]])
    assert cm.num_classes == 2 and cm.names == ("bg", "fg")


def test_wide_and_signed_codes_take_the_unique_path():
    cm = ClassMap(names=("a", "b"), mapping={-1: 0, 70000: 1})
    np.testing.assert_array_equal(cm.apply(np.array([[70000, -1]], dtype=np.int32)), [[1, 0]])


def test_uncovered_values_name_the_mask_and_values(tmp_path):
    path = write_map(tmp_path, {"names": ["bg", "fg"], "map": {"0": 0, "255": 1}})
    cm = ClassMap.from_json(path)
    with pytest.raises(ClassMapError) as err:
        cm.apply(np.array([[0, 4], [9, 255]], dtype=np.uint8), name="masks/x.png")
    msg = str(err.value)
    assert "masks/x.png" in msg and "[4, 9]" in msg and str(path) in msg and '"ignore"' in msg


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"map": {"0": 0}}, "'names'"),
        ({"names": ["a", "b"], "map": {"0": 2}}, "outside 0..1"),
        ({"names": ["a", "b"], "map": {"0": 0}, "ignore": [0]}, "both"),
        ({"names": ["a", "b"], "map": {"0": 0}, "ignore_index": 1}, "ignore_index 1"),
        ({"names": ["a", "b"], "map": {"0": 0}, "colors": [[0, 0, 0]]}, "colors"),
        ({"names": ["a", "b"], "map": {"x": 0}}, "integers"),
        ({"names": ["a", "b", "c"], "threshold": 127}, "exactly 2"),
        ({"names": ["a"], "map": {"0": 0}, "extra": 1}, "unknown keys"),
        ({"names": ["a"], "map": {}}, "empty 'map'"),
    ],
)
def test_malformed_maps(tmp_path, data, fragment):
    with pytest.raises(ClassMapError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        ClassMap.from_json(write_map(tmp_path, data))


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ClassMapError, match="does not exist"):
        ClassMap.from_json(tmp_path / "nope.json")
    with pytest.raises(ClassMapError, match="neither a JSON file nor a shipped name"):
        load_class_map("no_such_map")


def test_non_2d_mask():
    with pytest.raises(ClassMapError, match=r"\[2, 2, 3\]"):
        ClassMap.binary(None).apply(np.zeros((2, 2, 3), dtype=np.uint8))


def test_binary_threshold_and_exact():
    mask = np.array([[0, 3, 127, 128, 250, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(ClassMap.binary(threshold=127).apply(mask), [[0, 0, 0, 1, 1, 1]])
    with pytest.raises(ClassMapError, match=r"\[3, 127, 128, 250\]"):
        ClassMap.binary(threshold=None).apply(mask)


def test_default_palette_and_colorize():
    cm = ClassMap(names=("a", "b", "c"), mapping={0: 0, 1: 1, 2: 2})
    assert len(cm.colors) == 3 and cm.colors[0] == (0, 0, 0)
    rgb = cm.colorize(np.array([[1, 255]]))
    assert tuple(rgb[0, 0]) == cm.colors[1] and tuple(rgb[0, 1]) == (0, 0, 0)
    many = ClassMap(names=tuple("abcdefghijkl"), mapping={0: 0})
    assert len(many.colors) == 12 and many.colors[10] == many.colors[0]  # palette of 10, cycled


def test_shipped_maps():
    assert {"ocdc_binary", "bcss_5class"} <= set(shipped_names())
    bcss = load_class_map("bcss_5class")
    assert bcss.names == ("others", "tumor", "stroma", "inflammatory", "necrosis")
    assert bcss.ignore_index == 255 and set(bcss.ignore) == {0, 7, 15}
    # every BCSS code 0..21 is covered exactly once
    assert set(bcss.mapping) | set(bcss.ignore) == set(range(22))
    assert [bcss.mapping[c] for c in (1, 2, 3, 10, 11, 4, 5, 21)] == [1, 2, 3, 3, 3, 4, 0, 0]
    assert "outside_roi" in bcss.notes and "exclude" in bcss.notes
    ocdc = load_class_map("ocdc_binary")
    assert ocdc.num_classes == 2 and dict(ocdc.mapping) == {0: 0, 255: 1}


def test_bcss_real_mask_counts():
    raw = read_label_mask(BCSS / "masks" / BCSS_TILE)
    out = load_class_map("bcss_5class").apply(raw)
    counts = {int(v): int((raw == v).sum()) for v in np.unique(raw)}
    assert set(counts) == {1, 2, 3, 7, 15}  # as SOURCE.md says
    assert (out == 1).sum() == counts[1]
    assert (out == 2).sum() == counts[2]
    assert (out == 3).sum() == counts[3]
    assert (out == 255).sum() == counts[7] + counts[15]


def test_ocdc_png_masks_are_exact_and_jpeg_masks_need_threshold():
    png = read_label_mask(OCDC / "masks_bin_png" / "1009009_r31c1.png")
    assert set(np.unique(png).tolist()) == {0, 255}
    labels = load_class_map("ocdc_binary").apply(png)
    np.testing.assert_array_equal(labels, png // 255)
    jpg_path = OCDC / "masks_jpg" / "1009009_r31c1.jpg"
    assert Image.open(jpg_path).mode == "RGB"
    jpg = read_label_mask(jpg_path, allow_color=True)
    with pytest.raises(ClassMapError):
        load_class_map("ocdc_binary").apply(jpg)
    thresholded = ClassMap.binary(threshold=127).apply(jpg)
    # the shipped PNG masks are this JPEG thresholded at 127: nearly identical
    assert (thresholded != labels).mean() < 0.01
