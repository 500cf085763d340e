"""The ``pathseg`` command end to end on the real OCDC tiles: fit → checkpoint → test, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pathseg_core.cli import run
from tests.cli_helpers import find_checkpoint, quick_args, run_pathseg


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("pathseg: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short real fit (20 steps) whose checkpoint the other tests reuse."""
    root = tmp_path_factory.mktemp("fit")
    assert run(["fit", "--model", "sam", *quick_args(root, steps=20)]) == 0
    return root


def test_fit_writes_checkpoint_that_test_reloads(trained, capsys):
    ckpt = find_checkpoint(trained)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # checkpoints hold only primitives
    assert 0 < state["global_step"] <= 20
    assert state["hyper_parameters"]["backbone"] == "tiny"
    assert run(["test", "--model", "sam", *quick_args(trained / "test"), "--ckpt_path", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "test_dice_foreground" in out


def test_short_name_and_full_class_path_are_equivalent(tmp_path):
    from pathseg_core.cli import rewrite_model_argument

    assert rewrite_model_argument(["fit", "--model", "sam"]) == ["fit", "--model", "pathseg_sam.task.SamTask"]
    assert rewrite_model_argument(["fit", "--model=sam"]) == ["fit", "--model=pathseg_sam.task.SamTask"]
    full = ["fit", "--model", "pathseg_sam.task.SamTask"]
    assert rewrite_model_argument(full) == full
    # the named model wins over the class in a config file: --model moves after -c
    assert rewrite_model_argument(["fit", "--model", "sam", "-c", "a.yaml", "--model.lr", "1"]) == [
        "fit", "-c", "a.yaml", "--model", "pathseg_sam.task.SamTask", "--model.lr", "1"]


def test_print_config_resolves_short_name():
    out = run_pathseg("fit", "--model", "sam", "-c", "examples/configs/sam_ocdc_tiny.yaml", "--print_config")
    assert out.returncode == 0, out.stderr
    assert "class_path: pathseg_sam.task.SamTask" in out.stdout
    assert "eval_protocol: noisy_box" in out.stdout


def test_eval_protocol_option_changes_prompts(trained, capsys):
    ckpt = find_checkpoint(trained)
    assert run(["test", "--model", "sam", *quick_args(trained / "p5"), "--ckpt_path", str(ckpt),
                "--model.eval_protocol", "points5"]) == 0
    assert run(["test", "--model", "sam", *quick_args(trained / "p5"), "--ckpt_path", str(ckpt),
                "--model.eval_protocol", "points7x"]) != 0


# -- bad input: one line, non-zero exit, no partial output ------------------------------------


def test_missing_data_folder(tmp_path, capsys):
    code = run(["fit", "--model", "sam", *quick_args(tmp_path), "--data.init_args.root", str(tmp_path / "nope")])
    assert code == 2
    assert "nope" in _one_error_line(capsys)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks_bin_png").mkdir()
    code = run(["fit", "--model", "sam", *quick_args(tmp_path), "--data.init_args.root", str(tmp_path / "empty")])
    assert code == 2
    assert "empty" in _one_error_line(capsys)


def _copy_subset(data_root: Path, dst: Path, drop_mask: str | None = None, drop_image: str | None = None) -> Path:
    """A patch folder of symlinks to the real OCDC tiles (the data itself is never copied)."""
    src = data_root / "seg" / "ocdc"
    for sub in ("images", "masks_bin_png"):
        (dst / sub).mkdir(parents=True)
        for f in sorted((src / sub).iterdir()):
            if (sub == "images" and f.stem == drop_image) or (sub == "masks_bin_png" and f.stem == drop_mask):
                continue
            (dst / sub / f.name).symlink_to(f)
    return dst


def test_image_without_mask(tmp_path, data_root, capsys):
    root = _copy_subset(data_root, tmp_path / "d", drop_mask="1009009_r27c10")
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--data.init_args.root", str(root)]) == 2
    assert "1009009_r27c10" in _one_error_line(capsys)


def test_mask_without_image(tmp_path, data_root, capsys):
    root = _copy_subset(data_root, tmp_path / "d", drop_image="1009009_r41c5")
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--data.init_args.root", str(root)]) == 2
    assert "1009009_r41c5" in _one_error_line(capsys)


def test_mask_values_outside_class_map(tmp_path, capsys):
    cmap = tmp_path / "only_zero.json"
    cmap.write_text(json.dumps({"names": ["background", "tumour"], "map": {"0": 0}}))
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--data.init_args.class_map", str(cmap)]) == 2
    line = _one_error_line(capsys)
    assert "255" in line and "only_zero.json" in line


def test_class_count_mismatch_between_data_and_model(tmp_path, capsys):
    args = quick_args(tmp_path, "--model.init_args.num_classes", "3", "--model.init_args.class_names", "[a, b, c]")
    assert run(["fit", "--model", "sam", *args]) == 2
    line = _one_error_line(capsys)
    assert "2 classes" in line and "3" in line


def test_checkpoint_path_missing(tmp_path, capsys):
    assert run(["test", "--model", "sam", *quick_args(tmp_path), "--ckpt_path", str(tmp_path / "none.ckpt")]) == 2
    assert "none.ckpt" in _one_error_line(capsys)


def test_model_checkpoint_missing(tmp_path, capsys):
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--model.checkpoint", str(tmp_path / "sam.pth")]) == 2
    assert "sam.pth" in _one_error_line(capsys)


def test_model_checkpoint_not_a_state_dict(tmp_path, capsys):
    bad = tmp_path / "list.pth"
    torch.save([1, 2, 3], bad)
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--model.checkpoint", str(bad)]) == 2
    assert "list.pth" in _one_error_line(capsys)


def test_model_checkpoint_with_wrong_keys_and_shapes(tmp_path, capsys):
    from pathseg_core.models.sam import build_sam

    sd = build_sam("tiny").state_dict()
    sd["image_encoder.extra.weight"] = torch.zeros(1)
    first = next(k for k in sd if k.startswith("mask_decoder.") and sd[k].dim() == 2)
    sd[first] = torch.zeros(3, 3)
    bad = tmp_path / "wrong.pth"
    torch.save(sd, bad)
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--model.checkpoint", str(bad)]) == 2
    line = _one_error_line(capsys)
    assert "unexpected" in line and "image_encoder.extra.weight" in line and first in line


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_refused_by_weights_only(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, bad)
    assert run(["fit", "--model", "sam", *quick_args(tmp_path), "--model.checkpoint", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "this must never run" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("pathseg: error:")]
    assert len(errors) == 1 and "weights_only" in errors[0]


def test_prompts_of_wrong_shape():
    from pathseg_core.contracts import PromptError, Prompts
    from pathseg_core.models.sam import SamSegmenter

    model = SamSegmenter.from_config("tiny")
    feats = model.encode(torch.rand(2, 3, 64, 64) * 255)
    with pytest.raises(PromptError, match=r"boxes must be \[B, N, 4\]"):
        model.decode(feats, Prompts(boxes=torch.zeros(2, 1, 3)))
    with pytest.raises(PromptError, match="prompts cover 1 images but the batch has 2"):
        model.decode(feats, Prompts(boxes=torch.zeros(1, 1, 4)))
