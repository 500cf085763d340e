"""HIPT ViT-S/16: official key layout round trip, position-embedding resize, one-line errors."""

from __future__ import annotations

import pytest
import torch
from pathseg_sampath.hipt import HIPT_CONFIGS, HiptConfig, HiptInputError, HiptViT, load_hipt_checkpoint

from pathseg_core.models.checkpoint import CheckpointError

#: Keys of the official ``vit256_small_dino.pth`` teacher (``backbone.`` wrapped), per block.
BLOCK_KEYS = [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
]


def official_layout(embed: int = 384, depth: int = 12, grid: int = 14, patch: int = 16, seed: int = 0) -> dict:
    """A DINO-teacher state dict with the official key names and ViT-S/16 shapes (random values)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    sd = {
        "backbone.cls_token": r(1, 1, embed),
        "backbone.pos_embed": r(1, grid * grid + 1, embed),
        "backbone.patch_embed.proj.weight": r(embed, 3, patch, patch),
        "backbone.patch_embed.proj.bias": r(embed),
        "backbone.norm.weight": r(embed),
        "backbone.norm.bias": r(embed),
        "head.mlp.0.weight": r(8, embed),  # DINO projection head: dropped
        "head.last_layer.weight_g": r(1, 8),
    }
    shapes = {
        "qkv.weight": (3 * embed, embed),
        "qkv.bias": (3 * embed,),
        "proj.weight": (embed, embed),
        "fc1.weight": (4 * embed, embed),
        "fc1.bias": (4 * embed,),
        "fc2.weight": (embed, 4 * embed),
    }
    for i in range(depth):
        for key in BLOCK_KEYS:
            leaf = key.split(".", 1)[1]
            shape = shapes.get(leaf, shapes.get(key.split(".", 1)[1], (embed,)))
            sd[f"backbone.blocks.{i}.{key}"] = r(*shape)
    return sd


def test_full_size_round_trip(tmp_path):
    """Every official ViT-S/16 tensor lands in HiptViT unchanged, and nothing is left over."""
    sd = official_layout()
    path = tmp_path / "vit256_small_dino.pth"
    torch.save({"teacher": sd}, path)
    model = load_hipt_checkpoint(HiptViT(HIPT_CONFIGS["vit_s16"]), path)
    own = model.state_dict()
    expected = {k.removeprefix("backbone."): v for k, v in sd.items() if not k.startswith("head.")}
    assert set(own) == set(expected)
    assert all(torch.equal(own[k], v) for k, v in expected.items())
    assert sum(p.numel() for p in model.parameters()) == 21_665_664  # ViT-S/16 with a 14x14 grid


def test_bare_and_module_prefixed_state_dicts_load(tmp_path):
    sd = {
        k.replace("backbone.", "module."): v
        for k, v in official_layout(24, 2, 8, 8).items()
        if not k.startswith("head.")
    }
    path = tmp_path / "tiny.pth"
    torch.save(sd, path)
    model = load_hipt_checkpoint(HiptViT(HIPT_CONFIGS["tiny"]), path)
    assert torch.equal(model.pos_embed, sd["module.pos_embed"])


def test_wrong_architecture_is_one_line(tmp_path):
    """A ViT-B (768-d) DINO checkpoint does not fit ViT-S: one CheckpointError line naming shapes."""
    path = tmp_path / "vit_base.pth"
    torch.save({"teacher": official_layout(embed=48, depth=2, grid=8, patch=8)}, path)
    with pytest.raises(CheckpointError) as err:
        load_hipt_checkpoint(HiptViT(HIPT_CONFIGS["tiny"]), path)
    msg = str(err.value)
    assert "\n" not in msg and "shape mismatches" in msg and "ckpt [1,1,48] vs model [1,1,24]" in msg


def test_position_embedding_resized_bicubically_to_the_token_grid():
    model = HiptViT(HIPT_CONFIGS["vit_s16"])
    pos = model.grid_pos_embed(64, 64)
    assert pos.shape == (1, 384, 64, 64)
    stored = model.pos_embed[:, 1:].reshape(1, 14, 14, 384).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(stored, scale_factor=(64.1 / 14, 64.1 / 14), mode="bicubic")
    assert torch.equal(pos, ref)
    assert torch.equal(model.grid_pos_embed(14, 14), stored)


def test_dense_tokens_cover_the_patch_grid():
    model = HiptViT(HiptConfig("t", embed_dim=12, depth=1, num_heads=2, patch_size=8, pretrain_grid=4)).eval()
    out = model(torch.randn(2, 3, 48, 64))
    assert out.shape == (2, 12, 6, 8)


def test_image_not_divisible_by_patch_is_one_line():
    model = HiptViT(HIPT_CONFIGS["tiny"])
    with pytest.raises(HiptInputError, match=r"does not tile into 8x8 patches; resize images to a multiple of 8"):
        model(torch.randn(1, 3, 60, 64))
