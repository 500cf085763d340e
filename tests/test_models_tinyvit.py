"""TinyViT (MobileSAM encoder): hand-computed attention pieces, the MobileSAM layout, loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

import pathseg_core  # noqa: F401  (arms the torchvision fallback first)
from pathseg_core.models.checkpoint import CheckpointError
from pathseg_core.models.tinyvit import (
    MOBILE_SAM_CONFIGS,
    TinyViT,
    TinyViTBlock,
    TinyViTConfigError,
    WindowAttention,
    build_mobile_sam,
    build_tinyvit,
    tinyvit_features,
    window_offset_index,
)

#: Parameters of MobileSAM's image encoder as built here (TinyViT-5M + neck, no classifier).
#: The MobileSAM paper rounds it to 5.78M; its TinyViT module also holds an unused ImageNet
#: classifier (``norm_head`` 2 x 320, ``head`` 1000 x 320 + 1000) that we do not build.
MOBILE_SAM_ENCODER_PARAMS = 5_743_892
CLASSIFIER_PARAMS = 2 * 320 + 1000 * 320 + 1000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_window_offset_index_is_hand_computed() -> None:
    # 2x2 window, positions row-major: (0,0) (0,1) (1,0) (1,1); id = |dr| * 2 + |dc|.
    expected = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]])
    assert torch.equal(window_offset_index(2), expected)
    idx = window_offset_index(3)
    assert idx[0, 8] == 2 * 3 + 2  # (0,0) vs (2,2)
    assert idx[1, 3] == 1 * 3 + 1  # (0,1) vs (1,0)
    assert idx.max() == 8 and torch.equal(idx, idx.T)


def _identity_value_attention(dim: int, bias_column: int) -> WindowAttention:
    """q = k = 0, v = input, proj = identity; one huge bias picks which offset is attended."""
    attn = WindowAttention(dim, num_heads=1, window_size=2)
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        attn.qkv.weight[2 * dim :] = torch.eye(dim)
        attn.proj.weight.copy_(torch.eye(dim))
        attn.proj.bias.zero_()
        attn.attention_biases.zero_()
        attn.attention_biases[0, bias_column] = 50.0
    return attn


def test_attention_bias_selects_offsets() -> None:
    x = torch.randn(1, 4, 6, generator=_gen())
    normed = F.layer_norm(x, (6,))
    # Offset id 0 (self) -> every token attends to itself.
    out = _identity_value_attention(6, 0)(x)
    torch.testing.assert_close(out, normed, atol=1e-5, rtol=0)
    # Offset id 1 = (dr 0, dc 1): (0,0)<->(0,1), (1,0)<->(1,1).
    out = _identity_value_attention(6, 1)(x)
    torch.testing.assert_close(out, normed[:, [1, 0, 3, 2]], atol=1e-5, rtol=0)


def test_block_windows_are_cut_row_major_and_padded() -> None:
    block = TinyViTBlock(dim=4, num_heads=2, window_size=2, mlp_ratio=2.0, local_conv_size=3).eval()
    x = torch.randn(1, 4, 4, 4, generator=_gen(1))
    got = block._window_attention(x)
    for r in (0, 2):
        for c in (0, 2):
            window = x[:, r : r + 2, c : c + 2].reshape(1, 4, 4)
            want = block.attn(window).reshape(1, 2, 2, 4)
            torch.testing.assert_close(got[:, r : r + 2, c : c + 2], want)
    # 3x5 map: zero-padded to 4x6 for the windows, cropped back after.
    odd = torch.randn(2, 3, 5, 4, generator=_gen(2))
    assert block(odd).shape == (2, 3, 5, 4)
    padded = F.pad(odd, (0, 0, 0, 1, 0, 1))
    torch.testing.assert_close(block._window_attention(odd), block._window_attention(padded)[:, :3, :5])


def test_mobile_sam_encoder_layout_and_parameter_count() -> None:
    enc = build_tinyvit("5m")
    assert sum(p.numel() for p in enc.parameters()) == MOBILE_SAM_ENCODER_PARAMS
    sd = enc.state_dict()
    assert len(sd) == 298
    assert not any("attention_bias_idxs" in k for k in sd)  # non-persistent, as in MobileSAM
    shapes = {
        "patch_embed.seq.0.c.weight": (32, 3, 3, 3),
        "patch_embed.seq.2.bn.running_var": (64,),
        "layers.0.blocks.1.conv2.c.weight": (256, 1, 3, 3),
        "layers.0.downsample.conv1.c.weight": (128, 64, 1, 1),
        "layers.1.blocks.0.attn.attention_biases": (4, 49),
        "layers.1.blocks.1.local_conv.c.weight": (128, 1, 3, 3),
        "layers.2.blocks.5.attn.attention_biases": (5, 196),
        "layers.2.blocks.5.attn.qkv.weight": (480, 160),
        "layers.2.blocks.5.mlp.fc1.weight": (640, 160),
        "layers.2.downsample.conv2.c.weight": (320, 1, 3, 3),
        "layers.3.blocks.1.attn.attention_biases": (10, 49),
        "layers.3.blocks.1.mlp.norm.weight": (320,),
        "neck.0.weight": (256, 320, 1, 1),
        "neck.2.weight": (256, 256, 3, 3),
        "neck.3.bias": (256,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "layers.3.downsample.conv1.c.weight" not in sd and "head.weight" not in sd
    assert enc.layers[2].downsample.conv2.c.stride == (1, 1)
    assert enc.layers[1].downsample.conv2.c.stride == (2, 2)
    assert (enc.stride, enc.embedding_size) == (16, 64)


def test_mobile_sam_encoder_feature_shapes_at_1024() -> None:
    enc = build_tinyvit("5m").eval()
    with torch.no_grad():
        feats = tinyvit_features(enc, torch.randn(1, 3, 1024, 1024, generator=_gen()))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "embedding": (1, 256, 64, 64),
        "early": (1, 64, 64, 160),
        "late": (1, 64, 64, 320),
    }


def test_features_agree_with_stages_and_forward() -> None:
    enc = build_tinyvit("tiny", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64, generator=_gen())
    with torch.no_grad():
        stages = enc.forward_stages(x)
        feats = enc.forward_features(x)
        emb = enc(x)
    assert [tuple(s.shape[1:]) for s in stages] == [(16, 8, 8), (24, 4, 4), (32, 4, 4), (32, 4, 4)]
    torch.testing.assert_close(feats["early"], stages[1].permute(0, 2, 3, 1))
    torch.testing.assert_close(feats["late"], stages[-1].permute(0, 2, 3, 1))
    torch.testing.assert_close(feats["embedding"], emb)


def _save_like_official(sam: Sam, path: object) -> dict[str, torch.Tensor]:
    """``mobile_sam.pt`` is a plain state dict that also carries TinyViT's classifier."""
    sd = {k: v.clone() for k, v in sam.state_dict().items()}
    dim = sam.image_encoder.embed_dims[-1]
    g = _gen(3)
    sd["image_encoder.norm_head.weight"] = torch.ones(dim)
    sd["image_encoder.norm_head.bias"] = torch.zeros(dim)
    sd["image_encoder.head.weight"] = torch.randn(1000, dim, generator=g)
    sd["image_encoder.head.bias"] = torch.zeros(1000)
    torch.save(sd, path)
    return sd


def test_full_size_mobile_sam_round_trip(tmp_path) -> None:
    sam = build_mobile_sam()
    assert isinstance(sam, Sam) and sam.image_encoder.img_size == 1024
    assert tuple(sam.prompt_encoder.image_embedding_size) == (64, 64)
    with torch.no_grad():
        for p in sam.parameters():  # make every tensor distinct from a fresh build
            p.add_(0.01)
    path = tmp_path / "mobile_sam.pt"
    saved = _save_like_official(sam, path)
    assert sum(v.numel() for k, v in saved.items() if ".head." in k or "norm_head" in k) == CLASSIFIER_PARAMS

    loaded = build_mobile_sam(checkpoint=path)
    a, b = sam.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    enc_params = sum(p.numel() for p in loaded.image_encoder.parameters())
    assert enc_params == MOBILE_SAM_ENCODER_PARAMS


def test_checkpoint_without_bn_counters_loads_and_bad_ones_fail(tmp_path) -> None:
    sam = build_mobile_sam(config="tiny", image_size=64)
    sd = {k: v for k, v in sam.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "no_counters.pt")
    loaded = build_mobile_sam(tmp_path / "no_counters.pt", image_size=64, config="tiny")
    assert torch.equal(loaded.image_encoder.neck[0].weight, sam.image_encoder.neck[0].weight)

    del sd["image_encoder.neck.0.weight"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing"):
        build_mobile_sam(tmp_path / "missing.pt", image_size=64, config="tiny")
    sd["image_encoder.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError):
        build_mobile_sam(tmp_path / "extra.pt", image_size=64, config="tiny")
    # A tiny checkpoint does not fit the full-size model: shape mismatches are reported.
    torch.save(sam.state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_mobile_sam(tmp_path / "tiny.pt")
    with pytest.raises(FileNotFoundError):
        build_mobile_sam(tmp_path / "absent.pt")


def test_tiny_mobile_sam_forward_backward() -> None:
    cfg = MOBILE_SAM_CONFIGS["tiny"]
    sam = build_mobile_sam(config="tiny", image_size=64)
    images = torch.rand(2, 3, 64, 64, generator=_gen()) * 255
    x = torch.cat([sam.preprocess(im[None]) for im in images])
    feats = sam.image_encoder.forward_features(x)
    assert feats["embedding"].shape == (2, cfg["prompt_embed_dim"], 4, 4)
    boxes = torch.tensor([[4.0, 4.0, 40.0, 50.0]])
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    low, iou = sam.mask_decoder(
        image_embeddings=feats["embedding"][:1],
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    assert low.shape == (1, 3, 16, 16) and iou.shape == (1, 3)
    (low.mean() + iou.mean() + feats["early"].mean()).backward()
    enc = sam.image_encoder
    for p in (enc.patch_embed.seq[0].c.weight, enc.layers[1].blocks[0].attn.attention_biases, enc.neck[2].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_bad_configs_raise() -> None:
    with pytest.raises(TinyViTConfigError, match="merge_strides"):
        TinyViT(merge_strides=(2, 2))
    with pytest.raises(TinyViTConfigError, match="divisible"):
        TinyViT(embed_dims=(8, 16, 24, 32), num_heads=(1, 3, 3, 4), img_size=64)
    with pytest.raises(TinyViTConfigError, match="multiple"):
        build_tinyvit("tiny", img_size=60)
    with pytest.raises(TinyViTConfigError, match="unknown TinyViT"):
        build_tinyvit("21m")
    with pytest.raises(TinyViTConfigError, match="unknown MobileSAM"):
        build_mobile_sam(config="vit_h")
