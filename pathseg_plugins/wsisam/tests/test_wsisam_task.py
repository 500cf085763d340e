"""WSI-SAM task: switches, loss forms, LR targets / prompts, data checks, BCSS run and LR ablation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pathseg_wsisam.task import OFFICIAL_CODE, Switches, WSISamTask, context_object_masks

import pathseg_core  # noqa: F401  (arms the torchvision CPU fix first)
from pathseg_core.cli import run
from pathseg_core.contracts import Prediction, Prompts, Targets
from pathseg_core.data.wsi.datamodule import WSIPatchDataModule
from pathseg_core.task import ConfigError
from pathseg_core.testing.fixtures import make_bcss_split_slides

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "examples" / "configs" / "wsisam_bcss_tiny.yaml"


def _task(**kw: object) -> WSISamTask:
    torch.manual_seed(0)
    args = {"backbone": "tiny", "num_classes": 5, "max_objects": 4, "min_object_area": 32, "background_class": None}
    return WSISamTask(**{**args, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bcss(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return make_bcss_split_slides(tmp_path_factory.mktemp("wsisam_bcss"))


def _dm(bcss: dict, **kw: object) -> WSIPatchDataModule:
    args = {
        "slides": [str(bcss["train"][0]), str(bcss["test"][0])],
        "annotations": [str(bcss["train"][1]), str(bcss["test"][1])],
        "class_map": "bcss_5class",
        "sampling": "concentric",
        "mpp": 0.5,
        "patch_size": 128,
        "samples_per_slide": 4,
        "min_tissue": 0.3,
        "val_slides": ["bcss_right"],
        "batch_size": 2,
        "cache_dir": str(Path(bcss["train"][0]).parent / "cache"),
    }
    return WSIPatchDataModule(**{**args, **kw})  # type: ignore[arg-type]


def test_official_code_preset_sets_every_switch() -> None:
    paper = _task()
    assert paper.switches == Switches()
    task = _task(official_code=True, aggregation="max")
    assert task.switches == OFFICIAL_CODE
    assert task.model.aggregator.mode == "sum" and task.model.add_sam_logits and task.model.floor_context_boxes
    assert task.loss_fn.dice_squared and task.loss_fn.dice_smooth == 1e-5
    assert {k for k, v in vars(OFFICIAL_CODE).items() if getattr(Switches(), k) != v} == set(vars(OFFICIAL_CODE))


@pytest.mark.parametrize(("form", "lam"), [("weighted", 0.5), ("weighted", 0.25), ("sum_of_four", 0.5)])
def test_loss_forms(form: str, lam: float) -> None:
    task = _task(loss_form=form, loss_lambda=lam)
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :] = 1
    hr = torch.full((1, 1, 8, 8), 2.0)
    lr = torch.full((1, 1, 8, 8), -1.0)
    prompts = Prompts(boxes=torch.zeros(1, 1, 4))
    targets = Targets(masks=target)
    out = task.compute_loss(hr, Prediction(hr, None, {"context_logits": lr}), prompts, targets)
    lr_target = torch.zeros_like(target)
    lr_target[..., 2:4, 2:6] = 1  # 8x8 half-mask shrunk by 2 into the centre
    h = task.loss_fn(hr, target)["loss"]
    low = task.loss_fn(lr, lr_target)["loss"]
    expected = h + low if form == "sum_of_four" else lam * h + (1 - lam) * low
    assert torch.allclose(out["loss"], expected)
    assert torch.allclose(out["high"], h) and torch.allclose(out["low"], low)


def test_context_object_masks_extend_beyond_hr_view() -> None:
    hr = torch.zeros(1, 1, 8, 8)
    hr[0, 0, 2:4, 2:4] = 1  # HR [2, 4) maps to LR [3, 4): pixel (3, 3)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 3:5, 0:5] = 2  # the object continues to the left in the LR view
    labels[0, 7, 7] = 2  # another component of the class: not this object
    out = context_object_masks(hr, torch.tensor([[2]]), labels, 2.0)
    expected = torch.zeros(1, 1, 8, 8)
    expected[0, 0, 3:5, 0:5] = 1
    assert torch.equal(out, expected)
    mapped = torch.zeros(1, 1, 8, 8)
    mapped[0, 0, 3, 3] = 1  # without LR labels: the HR mask mapped into the LR frame
    assert torch.equal(context_object_masks(hr, torch.tensor([[2]]), None, 2.0), mapped)


def test_resampled_context_points_come_from_lr_mask(bcss: dict) -> None:
    batch = next(iter(_dm(bcss).train_dataloader()))
    task = _task(official_code=True, train_preset=None, train_prompt="points", train_points=10)
    prompts, targets = task.make_prompts(batch, "train")
    lr = prompts.context
    assert lr is not None and lr.points.shape == prompts.points.shape
    for i, j in prompts.valid_mask().nonzero().tolist():
        xy = lr.points[i, j].long()
        assert targets.context_masks[i, j][xy[:, 1], xy[:, 0]].all()
    paper = _task(train_preset=None, train_prompt="points", train_points=10)
    assert paper.make_prompts(batch, "train")[0].context is None  # mapped inside the model


def test_setup_rejects_wrong_context_scale(bcss: dict) -> None:
    task = _task()
    for dm, match in (
        (_dm(bcss, context_factor=4.0), "4.0x the HR field of view"),
        (_dm(bcss, sampling="random"), "sampling: concentric"),
    ):
        task._trainer = SimpleNamespace(datamodule=dm)  # type: ignore[assignment]
        with pytest.raises(ConfigError, match=match) as err:
            task.setup("fit")
        assert "\n" not in str(err.value)


def _dice(task: WSISamTask, batches: list) -> float:
    inter = total = 0.0
    task.eval()
    with torch.no_grad():
        for batch in batches:
            prompts, targets = task.make_prompts(batch, "val")
            pred = task.model.decode(task.encode(batch), prompts)
            logits = task.upsample(pred.mask_logits, batch.image_size)
            v = prompts.valid_mask()
            p, t = logits[v].sigmoid(), targets.masks[v]  # soft Dice: defined before masks form
            inter += float((p * t).sum())
            total += float(p.sum() + t.sum())
    return 2 * inter / max(total, 1.0)


def test_blanked_lr_input_scores_differently(bcss: dict) -> None:
    dm = _dm(bcss)
    train, val = list(dm.train_dataloader()), list(dm.val_dataloader())[:4]
    task = _task(train_preset=None, train_prompt="box")
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    task.train()
    for _ in range(3):
        for batch in train:
            loss = task.shared_step(batch, "train")[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
    with_lr = _dice(task, val)
    task.hparams.blank_context = True
    blanked = _dice(task, val)
    assert with_lr != pytest.approx(blanked, abs=1e-4)


def test_cli_fit_and_test_on_bcss(bcss: dict, tmp_path: Path) -> None:
    slides = f"[{bcss['train'][0]}, {bcss['test'][0]}]"
    masks = f"[{bcss['train'][1]}, {bcss['test'][1]}]"
    common = [
        "-c",
        str(CONFIG),
        "--data.slides",
        slides,
        "--data.annotations",
        masks,
        "--data.cache_dir",
        str(tmp_path / "cache"),
        "--data.samples_per_slide",
        "4",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    run(["fit", "--model", "wsisam", *common, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "2"])
    ckpt = sorted(tmp_path.rglob("*.ckpt"))[-1]
    run(
        [
            "test",
            "--model",
            "wsisam",
            *common,
            "--ckpt_path",
            str(ckpt),
            "--data.val_slides",
            "null",
            "--data.test_slides",
            "[bcss_right]",
            "--model.eval_protocol",
            "points5",
            "--trainer.limit_test_batches",
            "2",
        ]
    )
    # Whole-slide inference on the CMU slide with GeoJSON box prompts (context read per prompt).
    from pathseg_core.data.paths import data_root

    slide = data_root() / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs"
    out = tmp_path / "seg"
    rc = run(
        [
            "segment",
            str(slide),
            "--model",
            "wsisam",
            "--ckpt",
            str(ckpt),
            "--out",
            str(out),
            "--prompts",
            str(Path(__file__).with_name("cmu_boxes.geojson")),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["CMU-1-Small-Region.geojson", "CMU-1-Small-Region.overlay.png", "CMU-1-Small-Region.tiff"]
