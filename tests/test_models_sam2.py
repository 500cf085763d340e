"""SAM2 builders (constants vs the shipped YAML, parameter counts, loading) and Sam2Segmenter."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import sam2
import torch
import yaml
from sam2.modeling.backbones.hieradet import Hiera
from sam2.sam2_image_predictor import SAM2ImagePredictor

import pathseg_core  # noqa: F401  (arms the torchvision fallback first)
from pathseg_core.contracts import PromptError, Prompts
from pathseg_core.models.checkpoint import CheckpointError, map_keys
from pathseg_core.models.sam2 import (
    SAM2_CONFIGS,
    SAM2_KEY_RULES,
    Sam2Config,
    Sam2ConfigError,
    Sam2Segmenter,
    build_sam2,
    sam2_config,
)

#: Parameter counts of the full SAM2Base (memory modules included) as built here.
#: Published (SAM2.1 model table): 38.9M / 46M / 80.8M / 224.4M.
PARAMS = {"t": 38_962_498, "s": 46_060_354, "b+": 80_850_178, "l": 224_446_642}
YAML_DIR = Path(sam2.__file__).parent / "configs" / "sam2.1"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny() -> Sam2Segmenter:
    return Sam2Segmenter.from_config("tiny", multimask_output=True)


@pytest.fixture(scope="module")
def sam2_t():
    return build_sam2("t")


@pytest.mark.parametrize("name", ["t", "s", "b+", "l"])
def test_config_matches_shipped_yaml(name: str) -> None:
    model = yaml.safe_load((YAML_DIR / f"sam2.1_hiera_{name}.yaml").read_text())["model"]
    c = SAM2_CONFIGS[name]
    hiera_defaults = {k: p.default for k, p in inspect.signature(Hiera).parameters.items()}
    trunk = {**hiera_defaults, **model["image_encoder"]["trunk"]}
    for key in (
        "embed_dim",
        "num_heads",
        "stages",
        "global_att_blocks",
        "window_pos_embed_bkg_spatial_size",
        "window_spec",
    ):
        assert tuple(np.atleast_1d(trunk[key])) == tuple(np.atleast_1d(getattr(c, key))), key
    neck = model["image_encoder"]["neck"]
    assert neck["backbone_channel_list"] == c.backbone_channel_list
    assert (neck["d_model"], tuple(neck["fpn_top_down_levels"]), neck["fpn_interp_model"]) == (
        c.d_model,
        c.fpn_top_down_levels,
        c.fpn_interp_model,
    )
    assert neck["position_encoding"]["num_pos_feats"] == c.d_model
    assert model["image_encoder"]["scalp"] == c.scalp
    attn = model["memory_attention"]
    layer = attn["layer"]
    assert (attn["num_layers"], layer["dim_feedforward"], layer["dropout"], layer["activation"]) == (
        c.mem_attn_layers,
        c.mem_attn_dim_feedforward,
        c.mem_attn_dropout,
        c.mem_attn_activation,
    )
    for part in (layer["self_attention"], layer["cross_attention"]):
        assert (part["num_heads"], part["rope_theta"], part["feat_sizes"]) == (
            c.mem_attn_num_heads,
            c.rope_theta,
            [c.feat_size, c.feat_size],
        )
    assert layer["cross_attention"]["kv_in_dim"] == c.mem_dim
    enc = model["memory_encoder"]
    down, fuser = enc["mask_downsampler"], enc["fuser"]
    assert (enc["out_dim"], down["kernel_size"], down["stride"], down["padding"]) == (
        c.mem_dim,
        c.mask_downsampler_kernel_size,
        c.mask_downsampler_stride,
        c.mask_downsampler_padding,
    )
    assert (fuser["num_layers"], fuser["layer"]["kernel_size"], fuser["layer"]["padding"]) == (
        c.fuser_layers,
        c.fuser_kernel_size,
        c.fuser_padding,
    )
    assert float(fuser["layer"]["layer_scale_init_value"]) == c.fuser_layer_scale_init_value
    skip = {"_target_", "compile_image_encoder"}
    flags = {k: v for k, v in model.items() if not isinstance(v, dict) and k not in skip}
    assert set(flags) <= {f.name for f in fields(Sam2Config)}
    assert len(flags) == 23
    for key, value in flags.items():
        assert getattr(c, key) == value, key


@pytest.mark.parametrize("name", ["t", "s", "b+"])
def test_parameter_counts(name: str) -> None:
    assert sum(p.numel() for p in build_sam2(name).parameters()) == PARAMS[name]


@pytest.mark.slow
def test_parameter_count_large() -> None:
    assert sum(p.numel() for p in build_sam2("l").parameters()) == PARAMS["l"]


def _round_trip(model: torch.nn.Module, name: str, path: Path) -> None:
    with torch.no_grad():
        for p in model.parameters():  # distinct from any fresh build
            p.add_(0.01)
    torch.save({"model": model.state_dict()}, path)  # the official container
    loaded = build_sam2(name, checkpoint=path)
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    assert sum(p.numel() for p in loaded.parameters()) == PARAMS[name]


def test_full_size_round_trip_t(sam2_t, tmp_path) -> None:
    assert map_keys(sam2_t.state_dict(), SAM2_KEY_RULES).keys() == sam2_t.state_dict().keys()
    _round_trip(build_sam2("t"), "t", tmp_path / "sam2.1_hiera_tiny.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["s", "b+", "l"])
def test_full_size_round_trip_slow(name: str, tmp_path) -> None:
    _round_trip(build_sam2(name), name, tmp_path / f"sam2.1_{name}.pt")


def test_checkpoint_errors(tmp_path) -> None:
    small = build_sam2("tiny")
    torch.save({"model": small.state_dict()}, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_sam2("t", checkpoint=tmp_path / "tiny.pt")
    sd = small.state_dict()
    sd["video_only_head.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="match no mapping rule"):
        build_sam2("tiny", checkpoint=tmp_path / "extra.pt")
    with pytest.raises(FileNotFoundError):
        build_sam2("tiny", checkpoint=tmp_path / "absent.pt")
    with pytest.raises(Sam2ConfigError, match="unknown SAM2 config"):
        build_sam2("h")
    with pytest.raises(Sam2ConfigError, match="unknown Sam2Config fields"):
        sam2_config("t", embed_dims=8)


def test_matches_official_image_predictor(sam2_t) -> None:
    """Same features, IoUs and low-res logits as ``SAM2ImagePredictor`` on a non-square image."""
    model = sam2_t.eval()
    seg = Sam2Segmenter(model, multimask_output=True).eval()
    image = np.random.default_rng(0).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    box = np.array([50, 60, 250, 200], dtype=np.float32)
    pts, labels = np.array([[150, 125], [75, 90]], dtype=np.float32), np.array([1, 0])
    predictor = SAM2ImagePredictor(model)
    with torch.no_grad():
        predictor.set_image(image)
        _, ref_iou, ref_low = predictor.predict(
            point_coords=pts, point_labels=labels, box=box, multimask_output=True, return_logits=True
        )
        feats = seg.encode(torch.from_numpy(image).permute(2, 0, 1)[None].float())
        prompts = Prompts(
            boxes=torch.from_numpy(box).view(1, 1, 4),
            points=torch.from_numpy(pts).view(1, 1, 2, 2),
            point_labels=torch.from_numpy(labels).view(1, 1, 2),
        )
        out = seg.decode(feats, prompts)
    torch.testing.assert_close(feats["embedding"], predictor._features["image_embed"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.extras["multimask_iou"][0, 0].numpy(), ref_iou, atol=1e-5)
    np.testing.assert_allclose(out.extras["multimask_logits"][0, 0].clamp(-32, 32).numpy(), ref_low, atol=1e-4)
    best = int(ref_iou.argmax())
    np.testing.assert_allclose(out.mask_logits[0, 0].clamp(-32, 32).numpy(), ref_low[best], atol=1e-4)
    assert out.iou_pred.item() == pytest.approx(float(ref_iou[best]), abs=1e-5)


def test_prompt_frame_to_model_frame(tiny: Sam2Segmenter) -> None:
    # 64 x 32 (H x W) image, S = 128: x scales by 4, y by 2; boxes come first, labels 2 / 3.
    prompts = Prompts(
        boxes=torch.tensor([[[10.0, 20.0, 30.0, 40.0]]]),
        points=torch.tensor([[[[5.0, 6.0], [0.0, 0.0]]]]),
        point_labels=torch.tensor([[[1, -1]]]),
    )
    scale = (tiny.image_size / torch.tensor([[64.0, 32.0]]).flip(-1)).view(1, 1, 1, 2)
    coords, labels = tiny._sparse_inputs(prompts, scale)
    assert coords.tolist() == [[[40.0, 40.0], [120.0, 80.0], [20.0, 12.0], [0.0, 0.0]]]
    assert labels.tolist() == [[2, 3, 1, -1]]


def test_tiny_encode_decode_shapes_and_backward(tiny: Sam2Segmenter) -> None:
    images = torch.rand(2, 3, 96, 80, generator=_gen()) * 255
    feats = tiny.encode(images)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "embedding": (2, 32, 8, 8),
        "high_res_0": (2, 4, 32, 32),
        "high_res_1": (2, 8, 16, 16),
        "input_hw": (2, 2),
    }
    assert feats["input_hw"].tolist() == [[96, 80], [96, 80]]
    prompts = Prompts(
        boxes=torch.tensor([[[10.0, 10.0, 50.0, 60.0], [0, 0, 80, 96]], [[5, 5, 20, 20], [30, 30, 70, 90]]]),
        points=torch.tensor([[[[20.0, 30.0]], [[40, 50]]], [[[10, 10]], [[50, 60]]]]),
        point_labels=torch.ones(2, 2, 1, dtype=torch.long),
    )
    out = tiny.decode(feats, prompts)
    assert out.mask_logits.shape == (2, 2, 32, 32) and out.iou_pred.shape == (2, 2)
    assert out.extras["multimask_logits"].shape == (2, 2, 3, 32, 32)
    assert out.extras["object_score_logits"].shape == (2, 2)
    best = out.extras["multimask_iou"].argmax(-1)
    assert torch.equal(out.iou_pred, out.extras["multimask_iou"].gather(2, best[..., None])[..., 0])
    (out.mask_logits.mean() + out.iou_pred.mean()).backward()
    model = tiny.model
    for p in (
        model.image_encoder.trunk.patch_embed.proj.weight,
        model.image_encoder.neck.convs[0].conv.weight,
        model.sam_mask_decoder.conv_s0.weight,
        model.sam_prompt_encoder.point_embeddings[2].weight,
        model.no_mem_embed,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_single_mask_mask_prompts_and_empty(tiny: Sam2Segmenter) -> None:
    seg = Sam2Segmenter(tiny.model, multimask_output=False).eval()
    with torch.no_grad():
        feats = seg.encode(torch.rand(1, 3, 128, 128, generator=_gen()) * 255)
        out = seg.decode(feats, Prompts(masks=torch.randn(1, 3, 1, 64, 64, generator=_gen(1))))
        empty = seg.decode(feats, Prompts(boxes=torch.zeros(1, 0, 4)))
    assert out.mask_logits.shape == (1, 3, 32, 32) and "multimask_logits" not in out.extras
    assert empty.mask_logits.shape == (1, 0, 32, 32) and empty.iou_pred.shape == (1, 0)
    with pytest.raises(PromptError, match="needs prompts"):
        seg.decode(feats, None)
    with pytest.raises(PromptError, match="outside"):
        seg.decode(feats, Prompts(boxes=torch.tensor([[[0.0, 0.0, 200.0, 10.0]]])))


def test_encoder_trainability_and_signature(tiny: Sam2Segmenter) -> None:
    seg = Sam2Segmenter.from_config("tiny")
    assert seg.encoder_is_trainable()
    seg.model.image_encoder.requires_grad_(False)
    assert seg.encoder_is_trainable()  # conv_s0 / conv_s1 run in encode and still train
    seg.model.sam_mask_decoder.conv_s0.requires_grad_(False)
    seg.model.sam_mask_decoder.conv_s1.requires_grad_(False)
    assert not seg.encoder_is_trainable()
    before = seg.encoder_signature()
    assert before.startswith("sam2:128:1:") and before == seg.encoder_signature()
    with torch.no_grad():
        seg.model.sam_mask_decoder.iou_token.weight.add_(1.0)  # decoder-only: same encode
    assert seg.encoder_signature() == before
    with torch.no_grad():
        seg.model.image_encoder.trunk.pos_embed.add_(1.0)
    assert seg.encoder_signature() != before
