"""``pathseg segment`` end to end: outputs QuPath / OpenSlide can open, prompts, and every bad input."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pathseg_core.data.wsi.annotations import read_geojson
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.raster import rasterize
from pathseg_core.inference import tiff_writer
from pathseg_core.inference.segment_cli import main
from tests._segment_models import BoxTask, SaturationTask, make_blank_slide, make_small_slide, save_checkpoint

SEMANTIC = "tests._segment_models.SaturationTask"
PROMPTABLE = "tests._segment_models.BoxTask"
SMALL = (800, 600)  # level-0 size of the small slide, mpp 0.499


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segment")
    return {
        "small": make_small_slide(root / "small.tif"),
        "blank": make_blank_slide(root / "blank.tif"),
        "sat": save_checkpoint(SaturationTask(), root / "sat.ckpt"),
        "box": save_checkpoint(BoxTask(), root / "box.ckpt"),
    }


def _run(capsys, *args: object) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--quiet", "--tile-size", "128", "--overlap", "16"] + [str(a) for a in args])
    return rc, capsys.readouterr().err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("pathseg: error:")]


def _semantic(files: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return [files["small"], "--model", SEMANTIC, "--ckpt", files["sat"], "--out", out, *extra]


def _geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _box(x0: float, y0: float, x1: float, y1: float, name: str | None = None) -> dict:
    props: dict = {"objectType": "annotation"}
    if name:
        props["classification"] = {"name": name, "color": [255, 0, 0]}
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}


# ------------------------------------------------------------------ outputs
def test_semantic_run_writes_qupath_and_openslide_ready_outputs(files, tmp_path, capsys) -> None:
    import openslide

    rc, err = _run(capsys, *_semantic(files, tmp_path))
    assert rc == 0, err
    ds = 1.0 / 0.499  # default target mpp 1.0 from the checkpoint
    size = (math.ceil(SMALL[0] / ds), math.ceil(SMALL[1] / ds))
    with openslide.OpenSlide(str(tmp_path / "small.tiff")) as slide:
        assert slide.dimensions == size == (400, 300)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(1.0)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(1.0)
    mask = tifffile.imread(tmp_path / "small.tiff")
    counts = np.bincount(mask.ravel(), minlength=3)
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > 0 and mask.max() == 2
    # the GeoJSON (level-0 pixels) rasterised at the output resolution is the TIFF, pixel for pixel
    names = {"tissue": 1, "dark": 2}
    annotations = read_geojson(tmp_path / "small.geojson", class_map=names, slide_size=SMALL)
    assert {a.object_type for a in annotations} == {"annotation"}
    raw = json.loads((tmp_path / "small.geojson").read_text())
    colors = {"tissue": [230, 25, 75], "dark": [60, 180, 75]}  # the default palette
    assert all(
        f["properties"]["classification"]["color"] == colors[f["properties"]["classification"]["name"]]
        for f in raw["features"]
    )
    back = rasterize(annotations, PatchFrame(0.0, 0.0, ds, *size), dtype=np.uint8)
    np.testing.assert_array_equal(back, mask)
    overlay = np.asarray(Image.open(tmp_path / "small.overlay.png"))
    assert overlay.shape == (SMALL[1], SMALL[0], 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.geojson", "small.overlay.png", "small.tiff"]


def test_workers_and_bf16_runs(files, tmp_path, capsys) -> None:
    assert _run(capsys, *_semantic(files, tmp_path / "a"))[0] == 0
    assert _run(capsys, *_semantic(files, tmp_path / "b", "--num-workers", "1", "--batch-size", "3"))[0] == 0
    for name in ("small.tiff", "small.geojson", "small.overlay.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rc, err = _run(capsys, *_semantic(files, tmp_path / "c", "--precision", "bf16"))
    assert rc == 0, err
    agree = (tifffile.imread(tmp_path / "c" / "small.tiff") == tifffile.imread(tmp_path / "a" / "small.tiff")).mean()
    assert agree > 0.95


def test_promptable_run_paints_each_prompt_with_its_class(files, tmp_path, capsys) -> None:
    prompts = _geojson(
        tmp_path / "p.geojson",
        [
            _box(100.0, 100.0, 160.0, 140.0, "Tumor"),
            _box(400.0, 300.0, 440.0, 380.0),
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [600.5, 200.5]},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            },
        ],
    )
    args = [
        files["small"],
        "--model",
        PROMPTABLE,
        "--ckpt",
        files["box"],
        "--out",
        tmp_path / "o",
        "--prompts",
        prompts,
    ]
    rc, err = _run(capsys, *args, "--target-mpp", "0.499")  # output pixels = level-0 pixels
    assert rc == 0, err
    mask = tifffile.imread(tmp_path / "o" / "small.tiff")
    expected = np.zeros((600, 800), np.uint8)
    expected[100:140, 100:160] = 2  # "Tumor" is appended after the model's background / object
    expected[300:380, 400:440] = 1  # unclassified → 1
    yy, xx = np.mgrid[:600, :800]
    expected[(xx + 0.5 - 600.5) ** 2 + (yy + 0.5 - 200.5) ** 2 <= 36] = 2  # point → disk of radius 6
    np.testing.assert_array_equal(mask, expected)
    names = sorted({f["properties"]["classification"]["name"] for f in read_json(tmp_path / "o" / "small.geojson")})
    assert names == ["Tumor", "object"]


def read_json(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def test_no_tissue_gives_valid_empty_outputs_and_a_warning(files, tmp_path, capsys) -> None:
    args = [files["blank"], "--model", SEMANTIC, "--ckpt", files["sat"], "--out", tmp_path]
    rc, err = _run(capsys, *args)
    assert rc == 0 and "pathseg: warning: no tissue found" in err
    assert not tifffile.imread(tmp_path / "blank.tiff").any()
    assert read_json(tmp_path / "blank.geojson") == []
    assert np.asarray(Image.open(tmp_path / "blank.overlay.png")).shape == (500, 600, 3)


def test_many_slides_one_failing(files, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.svs"
    args = [missing, files["small"], "--model", SEMANTIC, "--ckpt", files["sat"], "--out", tmp_path / "o"]
    rc, err = _run(capsys, *args)
    assert rc == 1
    assert _errors(err) == [f"pathseg: error: slide {missing} does not exist; check the path"]
    assert (tmp_path / "o" / "small.tiff").exists()


# ------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def bad_slides(files, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "notes.svs").write_text("not a slide\n")
    data = files["small"].read_bytes()
    (root / "truncated.tif").write_bytes(data[: len(data) // 3])
    (root / "random.ndpi").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return {p.stem: p for p in root.iterdir()}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("notes", "tifffile: TiffFileError: not a TIFF file"),
        ("truncated", "truncated or corrupt"),
        ("random", "tifffile: TiffFileError: not a TIFF file"),
    ],
)
def test_unreadable_slides(files, bad_slides, tmp_path, capsys, name, message) -> None:
    args = [bad_slides[name], "--model", SEMANTIC, "--ckpt", files["sat"], "--out", tmp_path]
    rc, err = _run(capsys, *args)
    assert rc == 1 and len(_errors(err)) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_slide_without_mpp_and_target_finer_than_level0(files, data_root, tmp_path, capsys) -> None:
    tcga = data_root / "wsi" / "tcga_cr_7395" / "tcga-cr-7395-01a-01-ts1.svs"
    rc, err = _run(capsys, tcga, "--model", SEMANTIC, "--ckpt", files["sat"], "--out", tmp_path)
    assert rc == 1 and "has no mpp in its metadata; pass --mpp" in err
    rc, err = _run(capsys, *_semantic(files, tmp_path, "--target-mpp", "0.1"))
    assert rc == 1 and "target mpp 0.1 is finer than level 0" in err
    rc, err = _run(capsys, *_semantic(files, tmp_path, "--mpp", "0.05", "--target-mpp", "0.02"))
    assert rc == 1 and "finer than level 0" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ([_box(400.0, 400.0, 3000.0, 2000.0)], "beyond the 800x600 slide"),
        ([_box(700.0, 500.0, 830.0, 560.0)], "lies outside the 800x600 slide"),
        ([{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}], "LineString"),
    ],
)
def test_bad_prompt_files(files, tmp_path, capsys, content, message) -> None:
    path = tmp_path / "p.geojson"
    if isinstance(content, str):
        path.write_text(content)
    else:
        _geojson(path, content)
    out = tmp_path / "out"
    rc, err = _run(
        capsys, files["small"], "--model", PROMPTABLE, "--ckpt", files["box"], "--out", out, "--prompts", path
    )
    assert rc == 1 and len(_errors(err)) == 1 and message in err
    assert list(out.iterdir()) == []


def test_promptable_model_needs_prompts(files, tmp_path, capsys) -> None:
    rc, err = _run(capsys, files["small"], "--model", PROMPTABLE, "--ckpt", files["box"], "--out", tmp_path)
    assert rc == 1 and "is promptable: pass --prompts" in err


def test_output_folder_not_writable(files, tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    rc, err = _run(capsys, *_semantic(files, tmp_path / "file" / "out"))
    assert rc == 2 and _errors(err)[0].startswith(
        f"pathseg: error: output folder {tmp_path / 'file' / 'out'} is not writable"
    )


def test_checkpoint_of_another_model_and_unknown_model(files, tmp_path, capsys) -> None:
    rc, err = _run(capsys, files["small"], "--model", SEMANTIC, "--ckpt", files["box"], "--out", tmp_path)
    assert rc == 2 and len(_errors(err)) == 1
    assert f"checkpoint {files['box']} does not fit --model {SEMANTIC}" in err
    rc, err = _run(capsys, files["small"], "--model", "no_such_model", "--ckpt", files["sat"], "--out", tmp_path)
    assert rc == 2 and "unknown model 'no_such_model'" in err
    rc, err = _run(capsys, files["small"], "--model", SEMANTIC, "--ckpt", tmp_path / "nope.ckpt", "--out", tmp_path)
    assert rc == 2 and "does not exist" in err


def test_existing_outputs_need_overwrite_or_resume(files, tmp_path, capsys) -> None:
    assert _run(capsys, *_semantic(files, tmp_path))[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    rc, err = _run(capsys, *_semantic(files, tmp_path))
    assert rc == 1 and "already exist" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert _run(capsys, *_semantic(files, tmp_path, "--resume"))[0] == 0  # complete: skipped
    assert _run(capsys, *_semantic(files, tmp_path, "--overwrite"))[0] == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    rc, err = _run(capsys, *_semantic(files, tmp_path, "--overwrite", "--resume"))
    assert rc == 2 and "not allowed with argument" in err


def test_disk_full_removes_partial_files_and_keeps_earlier_outputs(files, tmp_path, capsys, monkeypatch) -> None:
    extra = ["--target-mpp", "0.499"]  # 800 x 600 output: two rows of 512-pixel TIFF tiles
    assert _run(capsys, *_semantic(files, tmp_path, *extra))[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls = []
    tiles_of = tiff_writer._tiles_of

    def full_disk(rows: np.ndarray, tile: int):
        calls.append(rows.shape)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return tiles_of(rows, tile)

    monkeypatch.setattr(tiff_writer, "_tiles_of", full_disk)
    rc, err = _run(capsys, *_semantic(files, tmp_path, *extra, "--overwrite"))
    assert rc == 1 and len(calls) == 2
    assert "disk full while writing outputs of small.tif" in _errors(err)[0] and "--resume" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")} == before
    assert not list(tmp_path.glob("*.partial"))
    monkeypatch.setattr(tiff_writer, "_tiles_of", tiles_of)
    assert _run(capsys, *_semantic(files, tmp_path, *extra, "--resume"))[0] == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_options_are_one_line(files, tmp_path, capsys) -> None:
    rc, err = _run(capsys, *_semantic(files, tmp_path, "--overlap", "100"))
    assert rc == 2 and _errors(err) == [
        "pathseg: error: --overlap 100 must be in 0..tile_size/2 and --tile-size 128 >= 16"
    ]
    rc, err = _run(capsys, *_semantic(files, tmp_path, "--device", "cuda:0"))
    assert rc == 2 and ("CUDA is not available" in err or err == "")


# ------------------------------------------------------------------ Lightning predict over a slide list
def _predict(files: dict[str, Path], slides: list[Path], out: Path, **trainer_kwargs: object) -> list[dict]:
    from lightning.pytorch import Trainer

    from pathseg_core.inference.engine import SegmentOptions
    from pathseg_core.inference.loading import load_segment_model
    from pathseg_core.inference.predict import SlidePredictionWriter, SlideSegmentationModule

    model = load_segment_model(SEMANTIC, files["sat"])
    module = SlideSegmentationModule(model, slides, out, SegmentOptions(tile_size=128, overlap=16))
    kwargs = {"accelerator": "cpu", "devices": 1, **trainer_kwargs}
    trainer = Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[SlidePredictionWriter(out)],
        **kwargs,
    )
    trainer.predict(module, return_predictions=False)
    return [
        json.loads(line) for p in sorted(out.glob("segment_results.rank*.jsonl")) for line in p.read_text().splitlines()
    ]


def test_shard_sampler_partitions_without_padding() -> None:
    from pathseg_core.inference.predict import SlideShardSampler

    shards = [list(SlideShardSampler(5, r, 3)) for r in range(3)]
    assert shards == [[0, 3], [1, 4], [2]]
    assert [len(SlideShardSampler(5, r, 3)) for r in range(3)] == [2, 2, 1]
    assert list(SlideShardSampler(1, 1, 2)) == []
    with pytest.raises(ValueError, match="rank 2 outside 0..1"):
        SlideShardSampler(4, 2, 2)


def test_lightning_predict_gives_the_cli_outputs(files, tmp_path, capsys) -> None:
    assert _run(capsys, *_semantic(files, tmp_path / "cli"))[0] == 0
    results = _predict(files, [tmp_path / "missing.svs", files["small"]], tmp_path / "pl")
    assert [r["status"] for r in sorted(results, key=lambda r: r["index"])] == ["failed", "done"]
    assert "does not exist" in results[0]["error"]
    for name in ("small.tiff", "small.geojson", "small.overlay.png"):
        assert (tmp_path / "pl" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


@pytest.mark.slow
def test_lightning_predict_splits_slides_over_two_processes(files, tmp_path, capsys) -> None:
    copies = []
    for i in range(3):
        copies.append(tmp_path / f"slide{i}.tif")
        copies[-1].write_bytes(files["small"].read_bytes())
    results = _predict(files, copies, tmp_path / "pl", devices=2, strategy="ddp_spawn")
    assert sorted(r["index"] for r in results) == [0, 1, 2] and {r["status"] for r in results} == {"done"}
    ranks = sorted(p.name for p in (tmp_path / "pl").glob("segment_results.rank*.jsonl"))
    assert ranks == ["segment_results.rank0.jsonl", "segment_results.rank1.jsonl"]
    first = (tmp_path / "pl" / "slide0.tiff").read_bytes()
    assert all((tmp_path / "pl" / f"slide{i}.tiff").read_bytes() == first for i in (1, 2))


def test_prompt_folder_per_slide_and_one_file_for_many_slides(files, tmp_path, capsys) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    _geojson(folder / "small.geojson", [_box(100.0, 100.0, 160.0, 140.0, "Tumor")])
    base = ["--model", PROMPTABLE, "--ckpt", files["box"], "--target-mpp", "0.499"]
    assert _run(capsys, files["small"], *base, "--out", tmp_path / "a", "--prompts", folder)[0] == 0
    assert _run(capsys, files["small"], *base, "--out", tmp_path / "b", "--prompts", folder / "small.geojson")[0] == 0
    assert (tmp_path / "a" / "small.tiff").read_bytes() == (tmp_path / "b" / "small.tiff").read_bytes()
    rc, err = _run(
        capsys, files["small"], files["blank"], *base, "--out", tmp_path / "c", "--prompts", folder / "small.geojson"
    )
    assert rc == 2 and len(_errors(err)) == 1 and "pass a folder of <slide>.geojson" in err


def test_context_patch_is_concentric_and_wider(tmp_path) -> None:
    from pathseg_core.data.wsi.reader import SlideReader
    from pathseg_core.inference.engine import _UnitDataset
    from pathseg_core.inference.plan import plan_grid
    from pathseg_core.testing.fixtures import decode_coordinates, make_coordinate_slide

    reader = SlideReader(make_coordinate_slide(tmp_path / "coords.tif", 700, 500, mpp=0.5), tolerance=0.0)
    plan = plan_grid(reader, target_mpp=0.5, tile_size=64, overlap=8, tissue=None, min_tissue=0.0)
    unit = plan.units[13 + 4]  # row 1, column 4: (x, y) = (224, 56), away from the slide border
    image, context = _UnitDataset(reader, plan.units, context_factor=2.0)[13 + 4]
    assert tuple(decode_coordinates(image)[0, 0]) == (unit.x, unit.y) == (224, 56)  # level 0 = output frame
    ctx = decode_coordinates(context)  # 2x coarser: each pixel averages 2 x 2 level-0 pixels
    # twice the field of view around the same centre: context pixel (16, 16) holds the tile's (0, 0)
    assert np.abs(ctx[16, 16] - (224, 56)).max() <= 1 and np.abs(ctx[0, 0] - (224 - 32, 56 - 32)).max() <= 1


def test_checkpoint_gives_classes_resolution_and_refuses_other_class_paths(files, tmp_path) -> None:
    import torch

    from pathseg_core.inference.loading import CheckpointMismatchError, load_segment_model, model_from_task

    sat = load_segment_model(SEMANTIC, files["sat"])
    assert sat.semantic and sat.class_names == ["background", "tissue", "dark"] and sat.target_mpp == 1.0
    assert sat.colors.tolist() == [[0, 0, 0], [230, 25, 75], [60, 180, 75]]
    box = load_segment_model(PROMPTABLE, files["box"])
    assert not box.semantic and box.class_names == ["background", "object"]
    task = SaturationTask()
    del task.hparams["target_mpp"]
    m = model_from_task(task, data_hparams={"mpp": 0.5, "context_factor": 4.0})
    assert (m.target_mpp, m.context_factor) == (0.5, 4.0)
    raw = torch.load(files["sat"], weights_only=True)
    raw["hyper_parameters"]["_class_path"] = "somewhere.OtherTask"
    torch.save(raw, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointMismatchError, match="was saved by somewhere.OtherTask, not --model"):
        load_segment_model(SEMANTIC, tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_text("junk")
    with pytest.raises(CheckpointMismatchError, match="cannot be read as a torch file"):
        load_segment_model(SEMANTIC, tmp_path / "junk.ckpt")
