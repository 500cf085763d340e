import pytest

import pathseg_core  # noqa: F401 - arms the torchvision fix first
from pathseg_core.data.paths import data_root
from pathseg_core.data.splits import (
    SplitError,
    SplitLeakError,
    TileBox,
    check_no_leak,
    check_spatial_gap,
    group_key,
    proportional_counts,
    read_split_file,
    spatial_split,
    split_by_group,
    tile_boxes,
)

OCDC_STEMS = sorted(p.stem for p in (data_root() / "seg" / "ocdc" / "images").glob("*.jpg"))
GRID = r"r(?P<row>\d+)c(?P<col>\d+)$"


def test_group_key():
    assert group_key("1009009_r27c10", r"^(\d+)_") == "1009009"
    assert group_key("TCGA-A2-A3XT-DX1_xmin83566_ymin29931_MPP-0-0-512", r"^(.*)_MPP") == (
        "TCGA-A2-A3XT-DX1_xmin83566_ymin29931"
    )
    with pytest.raises(SplitError, match="does not match"):
        group_key("abc", r"^(\d+)_")
    with pytest.raises(SplitError, match="exactly one"):
        group_key("1_2", r"^(\d)_(\d)")


def test_proportional_counts():
    assert proportional_counts(10, {"a": 0.8, "b": 0.2}) == {"a": 8, "b": 2}
    assert proportional_counts(3, {"a": 0.5, "b": 0.5}) == {"a": 2, "b": 1}
    assert proportional_counts(4, {"a": 0.9, "b": 0.05, "c": 0.05}) == {"a": 2, "b": 1, "c": 1}
    with pytest.raises(SplitError, match="cannot fill"):
        proportional_counts(2, {"a": 0.9, "b": 0.05, "c": 0.05})


def test_split_by_group_keeps_groups_whole():
    stems = [f"{slide}_{i}" for slide in "ABCDE" for i in range(2)]
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    splits = split_by_group(stems, r"^(\w)_", fractions, seed=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum(splits.values(), [])) == sorted(stems)
    check_no_leak(splits, r"^(\w)_")
    assert splits == split_by_group(stems, r"^(\w)_", fractions, seed=3)
    # a zero share comes back empty but present
    assert split_by_group(stems, r"^(\w)_", {"train": 1.0, "test": 0.0})["test"] == []


def test_split_by_group_one_slide_is_an_error():
    with pytest.raises(SplitError, match="only 1 group"):
        split_by_group(OCDC_STEMS, r"^(\d+)_", {"train": 0.8, "val": 0.2})


def test_read_split_file(tmp_path):
    path = tmp_path / "val.txt"
    path.write_text("# held-out tiles\n1009009_r27c5\n\n1009009_r41c5  # bottom row\n")
    assert read_split_file(path) == ["1009009_r27c5", "1009009_r41c5"]
    with pytest.raises(SplitError, match="does not exist"):
        read_split_file(tmp_path / "missing.txt")


def test_check_no_leak():
    check_no_leak({"train": ["a_1", "b_1"], "val": ["c_1"]}, r"^(\w)_")
    with pytest.raises(SplitLeakError, match="'a'"):
        check_no_leak({"train": ["a_1"], "val": ["a_2"]}, r"^(\w)_")
    with pytest.raises(SplitLeakError, match="stem 'x'"):
        check_no_leak({"train": ["x"], "test": ["x"]})


def test_tile_box_gap():
    a = TileBox("a", 0, 0, 10, 10)
    assert a.gap_to(TileBox("b", 10, 0, 10, 10)) == 0  # edge touch
    assert a.gap_to(TileBox("b", 10, 10, 10, 10)) == 0  # corner touch
    assert a.gap_to(TileBox("b", 12, 0, 10, 10)) == 2
    assert a.gap_to(TileBox("b", 5, 5, 10, 10)) == -5  # overlap
    assert a.gap_to(TileBox("b", 11, 30, 10, 10)) == 20
    assert TileBox("b", 11, 30, 10, 10).gap_to(a) == 20


def test_tile_boxes_grid_and_offsets():
    boxes = tile_boxes(["s_r2c3", "s_r0c1"], GRID, 640)
    assert boxes == [TileBox("s_r2c3", 1920, 1280, 640, 640), TileBox("s_r0c1", 640, 0, 640, 640)]
    assert tile_boxes(["t-512"], r"-(?P<x>\d+)$", (1024, 1024)) == [TileBox("t-512", 512, 0, 1024, 1024)]
    with pytest.raises(SplitError, match="named groups"):
        tile_boxes(["t-512"], r"-(\d+)$", 10)
    with pytest.raises(SplitError, match="does not match"):
        tile_boxes(["nogrid"], GRID, 10)


def test_spatial_split_ocdc_rows():
    boxes = tile_boxes(OCDC_STEMS, GRID, 640)
    result = spatial_split(boxes, {"train": 0.6, "val": 0.2, "test": 0.2}, axis="y", gap=1)
    # rows 27(2 tiles) 28(1) 31(2) 35(3) 41(2): test takes row 41, val row 35, train the rest
    assert result.splits["test"] == ["1009009_r41c2", "1009009_r41c5"]
    assert result.splits["val"] == ["1009009_r35c10", "1009009_r35c4", "1009009_r35c8"]
    assert result.splits["train"] == [
        "1009009_r27c10",
        "1009009_r27c5",
        "1009009_r28c12",
        "1009009_r31c0",
        "1009009_r31c1",
    ]
    assert result.dropped == []
    check_spatial_gap(boxes, result.splits, gap=1)


def test_spatial_split_ocdc_columns_keeps_neighbours_together():
    boxes = tile_boxes(OCDC_STEMS, GRID, 640)
    result = spatial_split(boxes, {"train": 0.6, "val": 0.2, "test": 0.2}, axis="x", gap=1)
    # columns from the right: 12(1) + 10(2) -> test; 8(1) + 5(2) -> val; the rest train
    assert result.splits["test"] == ["1009009_r27c10", "1009009_r28c12", "1009009_r35c10"]
    assert result.splits["val"] == ["1009009_r27c5", "1009009_r35c8", "1009009_r41c5"]
    where = {s: k for k, v in result.splits.items() for s in v}
    assert where["1009009_r31c0"] == where["1009009_r31c1"] == "train"
    check_spatial_gap(boxes, result.splits, gap=1)


def test_spatial_split_drops_training_tiles_in_the_guard():
    stems = ["r0c0", "r1c0", "r2c0", "r3c0", "r4c0", "r4c5"]
    boxes = tile_boxes(stems, GRID, 10)
    result = spatial_split(boxes, {"train": 0.5, "val": 0.0, "test": 0.5}, axis="y", gap=1)
    assert result.splits == {"train": ["r0c0", "r1c0"], "val": [], "test": ["r3c0", "r4c0", "r4c5"]}
    assert result.dropped == ["r2c0"]  # touched r3c0
    # a wider guard (2 tiles) also drops r1c0
    wide = spatial_split(boxes, {"train": 0.5, "test": 0.5}, axis="y", gap=11)
    assert wide.splits["train"] == ["r0c0"] and wide.dropped == ["r1c0", "r2c0"]
    # corners count as touching: the only training tile is dropped
    with pytest.raises(SplitError, match="left the splits"):
        spatial_split(tile_boxes(["r0c0", "r1c1"], GRID, 10), {"train": 0.5, "test": 0.5}, axis="y", gap=1)


def test_check_spatial_gap_catches_neighbours():
    boxes = tile_boxes(["s_r31c0", "s_r31c1"], GRID, 640)
    with pytest.raises(SplitLeakError, match="0 px apart"):
        check_spatial_gap(boxes, {"train": ["s_r31c0"], "test": ["s_r31c1"]})
