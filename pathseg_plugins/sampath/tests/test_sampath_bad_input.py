"""Bad input gives one clear line: class maps, class counts, HIPT checkpoints, patch grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pathseg_sampath.hipt import HIPT_CONFIGS, HiptInputError, HiptViT
from pathseg_sampath.model import SamPathConfigError, SamPathSegmenter
from pathseg_sampath.task import SamPathTask
from PIL import Image

from pathseg_core.data.class_map import ClassMapError
from pathseg_core.data.patch_folder import PatchFolderDataModule
from pathseg_core.task import ConfigError


def test_class_map_not_covering_mask_codes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(tmp_path / "images" / "a_1.png")
    mask = np.full((32, 32), 1, np.uint8)
    mask[:4] = 42  # BCSS has no code 42
    Image.fromarray(mask).save(tmp_path / "masks" / "a_1.png")
    dm = PatchFolderDataModule(
        str(tmp_path), "bcss_5class", split="files", split_files={"train": str(tmp_path / "train.txt")}
    )
    (tmp_path / "train.txt").write_text("a_1\n")
    dm.setup("fit")
    with pytest.raises(ClassMapError) as err:
        dm.datasets["train"][0]
    assert "42" in str(err.value) and "\n" not in str(err.value)


def test_model_classes_differ_from_data_classes():
    task = SamPathTask(sam_backbone="tiny", hipt_backbone="tiny", num_classes=3)

    class Trainer:
        datamodule = type("DM", (), {"num_classes": 5})()

    task._trainer = Trainer()
    with pytest.raises(
        ConfigError, match=r"the data has 5 classes but the model was built for 3; set --model.num_classes 5"
    ):
        task.setup("fit")


def test_decoder_token_count_must_match_classes():
    model = SamPathSegmenter.build(3, sam="tiny", hipt="tiny")
    with pytest.raises(SamPathConfigError, match="has 3 class tokens but num_classes=4 needs 4"):
        SamPathSegmenter(model.image_encoder, model.prompt_encoder, model.mask_decoder, model.hipt, 4)


def test_hipt_checkpoint_of_wrong_grid(tmp_path):
    from pathseg_sampath.hipt import load_hipt_checkpoint

    sd = HiptViT(HIPT_CONFIGS["tiny"]).state_dict()
    sd["pos_embed"] = torch.zeros(1, 5 * 5 + 1, 24)
    torch.save(sd, tmp_path / "grid.pth")
    with pytest.raises(ValueError, match="5x5 position grid but the model expects 8x8"):
        load_hipt_checkpoint(HiptViT(HIPT_CONFIGS["tiny"]), tmp_path / "grid.pth")


def test_encoder_input_not_on_the_patch_grid():
    with pytest.raises(HiptInputError, match="multiple of 8"):
        HiptViT(HIPT_CONFIGS["tiny"])(torch.zeros(1, 3, 20, 16))
    with pytest.raises(SamPathConfigError, match="not SAM's"):
        SamPathTask(sam_backbone="tiny", hipt_backbone="vit_s16", num_classes=3)


def test_official_dropped_class_must_be_a_class():
    with pytest.raises(ConfigError, match="official_dropped_class 7"):
        SamPathTask(
            sam_backbone="tiny",
            hipt_backbone="tiny",
            num_classes=2,
            code_preset="official_code",
            official_dropped_class=7,
        )
