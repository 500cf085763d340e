"""The sam plugin trains every SAM family (ViT, MobileSAM, SAM2) with each fine-tuning recipe."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from pathseg_sam.task import SamTask

from pathseg_core.testing.conformance import SyntheticDataModule


@pytest.mark.parametrize("backbone", ["tiny", "mobile_sam_tiny", "sam2_tiny"])
@pytest.mark.parametrize("finetune", ["decoder", "lora"])
def test_backbone_trains_only_what_the_recipe_says(backbone, finetune, tmp_path):
    torch.manual_seed(0)
    task = SamTask(backbone=backbone, finetune=finetune)
    frozen = {k: v.clone() for k, v in task.named_parameters() if not v.requires_grad}
    trainable = {k: v.clone() for k, v in task.named_parameters() if v.requires_grad}
    assert all(("mask_decoder" in k) or ("lora_" in k) for k in trainable)
    Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path).fit(
        task, datamodule=SyntheticDataModule())
    params = dict(task.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in frozen.items()), "a frozen parameter moved"
    assert any(not torch.equal(params[k], v) for k, v in trainable.items()), "nothing trained"


def test_zero_shot_sam_evaluates_without_training(tmp_path):
    task = SamTask(backbone="tiny", finetune="none")
    assert not any(p.requires_grad for p in task.parameters())
    out = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=tmp_path).test(task, datamodule=SyntheticDataModule(), verbose=False)
    assert 0.0 <= out[0]["test_dice_foreground"] <= 1.0
