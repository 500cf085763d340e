from __future__ import annotations

import pytest
import torch
from torch import nn

from pathseg_core.models.adapters import (
    AdapterError,
    apply_lora,
    count_parameters,
    format_report,
    freeze,
    trainable_report,
    unfreeze,
)
from pathseg_core.models.sam import SAM_VIT_LORA_TARGETS, SamSegmenter, build_sam


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.ModuleDict({"qkv": nn.Linear(8, 24), "proj": nn.Linear(8, 8)}),
        nn.ModuleDict({"qkv": nn.Linear(8, 24), "mlp": nn.Linear(8, 16)}),
    )


# ------------------------------------------------------------------ LoRA


def test_lora_on_sam_attention_only():
    encoder = build_sam("tiny").image_encoder  # 4 blocks, width 32: qkv 32->96, proj 32->32
    total_before = count_parameters(encoder)
    apply_lora(encoder, list(SAM_VIT_LORA_TARGETS), r=4, alpha=8)
    per_block = 4 * (32 + 96) + 4 * (32 + 32)  # r * (in + out) for qkv and proj
    assert count_parameters(encoder, trainable_only=True) == 4 * per_block == 3072
    assert count_parameters(encoder) == total_before + 3072
    lora_owners = {n.rsplit(".lora_", 1)[0] for n, _ in encoder.named_parameters() if ".lora_" in n}
    assert lora_owners == {f"blocks.{i}.attn.{m}" for i in range(4) for m in ("qkv", "proj")}
    assert all(p.requires_grad == (".lora_" in n) for n, p in encoder.named_parameters())


def test_plain_proj_also_hits_the_patch_embedding():
    encoder = build_sam("tiny").image_encoder
    apply_lora(encoder, ["proj"], r=2)
    owners = {n.rsplit(".lora_", 1)[0] for n, _ in encoder.named_parameters() if ".lora_" in n}
    assert "patch_embed.proj" in owners


def test_lora_starts_as_identity_and_trains():
    model = _toy()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    before = model[0]["qkv"](x).detach()
    apply_lora(model, ["qkv"], r=2, alpha=4)
    layer = model[0]["qkv"]
    torch.testing.assert_close(layer(x), before)  # lora_B starts at zero
    assert count_parameters(model, trainable_only=True) == 2 * 2 * (8 + 24)
    assert not model[0]["proj"].weight.requires_grad and not model[1]["mlp"].weight.requires_grad
    layer(x).sum().backward()
    assert layer.lora_B["default"].weight.grad.abs().sum() > 0


def test_lora_with_a_regex_and_without_match():
    model = _toy()
    apply_lora(model, r"0\.(qkv|proj)", r=1)
    assert count_parameters(model, trainable_only=True) == (8 + 24) + (8 + 8)
    with pytest.raises(AdapterError, match=r"match no module of Sequential"):
        apply_lora(_toy(), ["attn.qkv"])


def test_lora_on_a_segmenter_encoder_keeps_decode_working():
    torch.manual_seed(0)
    model = SamSegmenter.from_config("tiny")
    apply_lora(model.image_encoder, list(SAM_VIT_LORA_TARGETS))
    assert all(p.requires_grad for p in model.mask_decoder.parameters())
    from pathseg_core.contracts import Prompts

    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255
    pred = model(images, Prompts(boxes=torch.tensor([[[10.0, 10.0, 90.0, 80.0]]])))
    pred.mask_logits.sum().backward()
    lora_a = model.image_encoder.blocks[0].attn.qkv.lora_A["default"].weight
    assert lora_a.grad is not None  # lora_B is zero, so A's gradient is zero but present
    assert model.image_encoder.blocks[0].attn.qkv.lora_B["default"].weight.grad.abs().sum() > 0
    assert model.image_encoder.blocks[0].attn.qkv.base_layer.weight.grad is None


# ------------------------------------------------------------------ freeze / unfreeze / count


def test_freeze_with_exceptions_and_unfreeze():
    model = _toy()
    freeze(model, except_patterns=["1.*"])
    assert count_parameters(model, trainable_only=True) == (8 * 24 + 24) + (8 * 16 + 16)
    assert count_parameters(model) == (8 * 24 + 24) * 2 + (8 * 8 + 8) + (8 * 16 + 16)
    unfreeze(model, ["0.proj.weight"])
    assert model[0]["proj"].weight.requires_grad and not model[0]["proj"].bias.requires_grad
    unfreeze(model)
    assert count_parameters(model, trainable_only=True) == count_parameters(model)
    freeze(model)
    assert count_parameters(model, trainable_only=True) == 0


def test_patterns_that_match_nothing_are_errors():
    with pytest.raises(AdapterError, match=r"except_patterns \['decoder\.\*'\] match no parameter"):
        freeze(_toy(), except_patterns=["decoder.*"])
    with pytest.raises(AdapterError, match=r"patterns \['x'\] match no parameter"):
        unfreeze(_toy(), ["x"])


def test_shared_parameters_count_once():
    lin = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(lin, lin)) == 20


# ------------------------------------------------------------------ report


def test_trainable_report_rows():
    sam = build_sam("tiny")
    freeze(sam, except_patterns=["mask_decoder.*"])
    rows = trainable_report(sam)
    names = [r[0] for r in rows]
    assert names == ["image_encoder", "prompt_encoder", "mask_decoder"]
    by_name = {n: (t, total) for n, t, total in rows}
    dec = count_parameters(sam.mask_decoder)
    assert by_name["mask_decoder"] == (dec, dec)
    assert by_name["image_encoder"] == (0, count_parameters(sam.image_encoder))
    assert sum(r[2] for r in rows) == count_parameters(sam)

    deep = trainable_report(sam, depth=2)
    assert [r[0] for r in deep][:3] == ["image_encoder.pos_embed", "image_encoder.patch_embed", "image_encoder.blocks"]
    assert sum(r[2] for r in deep) == count_parameters(sam)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        trainable_report(sam, depth=0)


def test_format_report_text():
    model = _toy()
    freeze(model, except_patterns=["1.*"])
    text = format_report(model)
    lines = text.splitlines()
    assert "Sequential parameters" in lines[0]
    row0 = next(line for line in lines if line.lstrip("│ ").startswith("0 "))
    assert "0" in row0 and "288" in row0 and "0.00" in row0  # 8*24+24 + 8*8+8 = 288
    total = next(line for line in lines if "total" in line and "trainable" not in line)
    assert "360" in total and "648" in total and "55.56" in total  # 216+144 of 288+360
