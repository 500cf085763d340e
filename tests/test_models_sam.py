from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pathseg_core.contracts import PromptError, Prompts
from pathseg_core.models.checkpoint import CheckpointError
from pathseg_core.models.sam import (
    SAM_CONFIGS,
    SamConfig,
    SamConfigError,
    SamSegmenter,
    build_sam,
    vit_features,
)

# tiny: image_size 128, patch 8 -> 16x16 embedding, 64x64 low-res logits, 32 channels.


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(multimask: bool = False, seed: int = 0) -> SamSegmenter:
    torch.manual_seed(seed)  # segment-anything's modules initialise from the global RNG
    return SamSegmenter.from_config("tiny", multimask_output=multimask)


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


def _prompts(b: int = 2) -> Prompts:
    """Two objects per image in a 96x128 (H x W) image: boxes, two points each, mask prompts."""
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[[4.0, 8.0, 60.0, 50.0], [30.0, 20.0, 127.0, 95.0]]]).repeat(b, 1, 1)
    points = torch.tensor([[[[20.0, 30.0], [50.0, 10.0]], [[100.0, 60.0], [0.0, 0.0]]]]).repeat(b, 1, 1, 1)
    labels = torch.tensor([[[1, 0], [1, -1]]]).repeat(b, 1, 1)
    masks = torch.randn(b, 2, 1, 48, 64, generator=g)
    return Prompts(boxes=boxes, points=points, point_labels=labels, masks=masks)


# ------------------------------------------------------------------ registry / builders


def test_registry_holds_the_official_constants():
    vb, vl, vh = SAM_CONFIGS["vit_b"], SAM_CONFIGS["vit_l"], SAM_CONFIGS["vit_h"]
    assert (vb.encoder_embed_dim, vb.encoder_depth, vb.encoder_num_heads) == (768, 12, 12)
    assert (vl.encoder_embed_dim, vl.encoder_depth, vl.encoder_num_heads) == (1024, 24, 16)
    assert (vh.encoder_embed_dim, vh.encoder_depth, vh.encoder_num_heads) == (1280, 32, 16)
    assert vb.encoder_global_attn_indexes == (2, 5, 8, 11)
    assert vl.encoder_global_attn_indexes == (5, 11, 17, 23)
    assert vh.encoder_global_attn_indexes == (7, 15, 23, 31)
    for cfg in (vb, vl, vh):
        assert (cfg.image_size, cfg.patch_size, cfg.window_size, cfg.prompt_embed_dim) == (1024, 16, 14, 256)
        assert cfg.use_rel_pos


def test_tiny_model_structure():
    sam = build_sam("tiny")
    enc = sam.image_encoder
    assert enc.img_size == 128 and enc.pos_embed.shape == (1, 16, 16, 32)
    assert [blk.window_size for blk in enc.blocks] == [4, 0, 4, 0]
    assert sam.prompt_encoder.mask_input_size == (64, 64)
    assert sam.mask_decoder.num_multimask_outputs == 3


def test_config_errors():
    with pytest.raises(SamConfigError, match="unknown SAM config 'vit_x'; choose one of vit_b, vit_l, vit_h, tiny"):
        build_sam("vit_x")
    with pytest.raises(SamConfigError, match="no field"):
        SamSegmenter.from_config("tiny", image_sise=64)
    with pytest.raises(SamConfigError, match="not a multiple of patch_size"):
        SamConfig("bad", 32, 2, 2, (1,), image_size=100, patch_size=8)
    with pytest.raises(SamConfigError, match="below encoder_depth 2"):
        SamConfig("bad", 32, 2, 2, (2,))


def test_overrides_change_every_size():
    model = SamSegmenter.from_config("tiny", image_size=64, encoder_global_attn_indexes=[0])
    assert model.image_size == 64
    f = model.encode(_images(1, 64, 64))
    assert f["embedding"].shape == (1, 32, 8, 8)
    assert f["early"].shape == (1, 8, 8, 32)


# ------------------------------------------------------------------ encode


def test_vit_features_match_the_encoder_forward():
    sam = build_sam("tiny")
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    feats = vit_features(sam.image_encoder, x)
    torch.testing.assert_close(feats["embedding"], sam.image_encoder(x))
    assert feats["early"].shape == feats["late"].shape == (2, 16, 16, 32)
    # "early" is the output of block 1, the first global-attention block.
    h = sam.image_encoder.patch_embed(x) + sam.image_encoder.pos_embed
    h = sam.image_encoder.blocks[1](sam.image_encoder.blocks[0](h))
    torch.testing.assert_close(feats["early"], h)


def test_preprocess_resizes_normalises_and_pads():
    model = _tiny()
    images = _images(1, 192, 256)
    x = model.preprocess(images)
    assert x.shape == (1, 3, 128, 128)
    small = F.interpolate(images, size=(96, 128), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(x[..., :96, :], (small - model.pixel_mean) / model.pixel_std)
    assert torch.all(x[..., 96:, :] == 0)
    assert model.resized_hw(100, 50) == (128, 64)
    assert model.resized_hw(3, 1000) == (1, 128)  # 0.384 rows rounds to 0: kept at 1


class _PlainEncoder(nn.Module):
    """A SAM-compatible encoder that only offers ``img_size`` and ``forward``."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.img_size = vit.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


def test_other_encoders_need_only_img_size_and_forward():
    model = _tiny()
    plain = SamSegmenter(_PlainEncoder(model.image_encoder), model.prompt_encoder, model.mask_decoder)
    f = plain.encode(_images(2, 96, 128))
    assert sorted(f) == ["embedding", "input_hw"]
    torch.testing.assert_close(
        plain.decode(f, _prompts()).mask_logits, model.decode(model.encode(_images(2, 96, 128)), _prompts()).mask_logits
    )


def test_encode_records_the_input_size():
    f = _tiny().encode(_images(2, 96, 128))
    assert f["embedding"].shape == (2, 32, 16, 16)
    assert f["input_hw"].tolist() == [[96, 128], [96, 128]]
    assert f["input_hw"].dtype == torch.long


# ------------------------------------------------------------------ decode


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("kind", ["boxes", "points", "masks", "all"])
def test_decode_shapes_cover_the_input_extent(kind, multimask):
    model = _tiny(multimask)
    full = _prompts()
    if kind == "all":
        prompts = full
    elif kind == "points":
        prompts = Prompts(points=full.points, point_labels=full.point_labels)
    else:
        prompts = Prompts(**{kind: getattr(full, kind)})
    pred = model.decode(model.encode(_images(2, 96, 128)), prompts)
    # 96x128 fills rows 0..95 of the 128x128 frame -> rows 0..47 of the 64x64 logits.
    assert pred.mask_logits.shape == (2, 2, 48, 64)
    assert pred.iou_pred.shape == (2, 2)
    assert torch.isfinite(pred.mask_logits).all()
    if multimask:
        assert pred.extras["multimask_logits"].shape == (2, 2, 3, 48, 64)
        best = pred.extras["multimask_iou"].argmax(-1)
        assert torch.equal(pred.iou_pred, pred.extras["multimask_iou"].max(-1).values)
        for b in range(2):
            for n in range(2):
                assert torch.equal(pred.mask_logits[b, n], pred.extras["multimask_logits"][b, n, best[b, n]])
    else:
        assert pred.extras is None


@pytest.mark.parametrize("multimask", [False, True])
def test_decode_matches_segment_anything_reference(multimask):
    """Same weights through segment-anything's own ``Sam.forward`` (prompts given in its frame)."""
    torch.manual_seed(0)
    sam = build_sam("tiny")
    model = SamSegmenter.from_sam(sam, multimask_output=multimask)
    images = _images(2, 96, 128)  # longest side is already 128: no resize
    prompts = _prompts()
    ours = model.decode(model.encode(images), prompts)
    padded_masks = F.pad(prompts.masks, (0, 0, 0, 16), value=model.mask_pad_value)  # [B,N,1,64,64]
    batched = [
        {
            "image": images[b],
            "original_size": (96, 128),
            "boxes": prompts.boxes[b],
            "point_coords": prompts.points[b],
            "point_labels": prompts.point_labels[b],
            "mask_inputs": padded_masks[b],
        }
        for b in range(2)
    ]
    ref = sam(batched, multimask_output=multimask)
    for b in range(2):
        low, iou = ref[b]["low_res_logits"], ref[b]["iou_predictions"]  # [N,K,64,64], [N,K]
        pick = iou.argmax(-1) if multimask else torch.zeros(2, dtype=torch.long)
        torch.testing.assert_close(ours.mask_logits[b], low[torch.arange(2), pick][:, :48, :], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.iou_pred[b], iou[torch.arange(2), pick], rtol=1e-4, atol=1e-4)


def test_prompts_are_scaled_from_the_original_frame():
    """The same features decoded as a 96x128 or a 192x256 input differ only by the prompt scale."""
    model = _tiny()
    f = model.encode(_images(2, 96, 128))
    prompts = _prompts()
    small = model.decode(f, prompts)
    f_big = dict(f, input_hw=torch.tensor([[192, 256]] * 2))
    big_prompts = Prompts(
        boxes=prompts.boxes * 2,
        points=prompts.points * 2,
        point_labels=prompts.point_labels,
        masks=F.interpolate(prompts.masks[:, :, 0], scale_factor=2, mode="nearest")[:, :, None],
    )
    big = model.decode(f_big, big_prompts)
    assert big.mask_logits.shape == (2, 2, 48, 64)
    torch.testing.assert_close(big.mask_logits, small.mask_logits, rtol=1e-4, atol=1e-3)


def test_tall_image_crops_columns():
    model = _tiny()
    f = model.encode(_images(1, 100, 50))  # resized to 128x64 -> 64x32 low-res
    pred = model.decode(f, Prompts(boxes=torch.tensor([[[5.0, 5.0, 40.0, 90.0]]])))
    assert pred.mask_logits.shape == (1, 1, 64, 32)


def test_no_prompts_and_bad_prompts():
    model = _tiny()
    f = model.encode(_images(2, 96, 128))
    empty = model.decode(f, Prompts(boxes=torch.zeros(2, 0, 4)))
    assert empty.mask_logits.shape == (2, 0, 48, 64) and empty.iou_pred.shape == (2, 0)
    with pytest.raises(PromptError, match="needs prompts"):
        model.decode(f, None)
    with pytest.raises(PromptError, match="prompts cover 1 images but the batch has 2"):
        model.decode(f, Prompts(boxes=torch.zeros(1, 1, 4)))
    with pytest.raises(PromptError, match="outside the 128x96 image"):
        model.decode(f, Prompts(boxes=torch.tensor([[[0.0, 0.0, 200.0, 50.0]]] * 2)))
    with pytest.raises(PromptError, match="lack 'input_hw'"):
        model.decode({"embedding": f["embedding"]}, _prompts())


def test_backward_reaches_decoder_and_encoder():
    model = _tiny()
    pred = model(_images(2, 96, 128), _prompts())
    (pred.mask_logits.mean() + pred.iou_pred.mean()).backward()
    for part in (model.mask_decoder, model.image_encoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads[-4:])
    assert model.mask_decoder.output_upscaling[0].weight.grad.abs().sum() > 0


def test_cached_features_decode_alike(tmp_path):
    model = _tiny()
    f = model.encode(_images(2, 96, 128))
    torch.save({k: v.detach() for k, v in f.items()}, tmp_path / "f.pt")
    cached = torch.load(tmp_path / "f.pt", weights_only=True)
    torch.testing.assert_close(model.decode(cached, _prompts()).mask_logits, model.decode(f, _prompts()).mask_logits)


def test_encoder_signature_tracks_encoder_weights_only():
    a, b = _tiny(seed=0), _tiny(seed=0)
    assert a.encoder_signature() == b.encoder_signature()
    assert a.encoder_signature().startswith("sam:tiny:128:")
    with torch.no_grad():
        b.mask_decoder.iou_token.weight.add_(1.0)
    assert a.encoder_signature() == b.encoder_signature()
    with torch.no_grad():
        b.image_encoder.neck[0].weight[0, 0] += 1.0
    assert a.encoder_signature() != b.encoder_signature()
    assert _tiny(seed=1).encoder_signature() != a.encoder_signature()


# ------------------------------------------------------------------ full-size models and checkpoints


def _counts(sam) -> tuple[int, int, int]:
    return tuple(
        sum(p.numel() for p in m.parameters()) for m in (sam.image_encoder, sam.prompt_encoder, sam.mask_decoder)
    )


def _round_trip(name: str, tmp_path, expected: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    sam = build_sam(name)
    assert _counts(sam) == expected
    sd = sam.state_dict()
    torch.save(sd, tmp_path / f"sam_{name}.pth")
    del sam
    torch.manual_seed(1)  # a different random init, so equality proves the load
    loaded = build_sam(name, checkpoint=tmp_path / f"sam_{name}.pth")
    sd2 = loaded.state_dict()
    assert list(sd2) == list(sd)
    assert all(sd2[k].shape == sd[k].shape for k in sd)
    assert _counts(loaded) == expected
    for key in ("image_encoder.blocks.0.attn.qkv.weight", "mask_decoder.iou_token.weight"):
        assert torch.equal(sd2[key], sd[key])


def test_vit_b_parameter_counts_and_checkpoint_round_trip(tmp_path):
    # Published SAM ViT-B: image encoder 89,670,912; prompt encoder 6,220; mask decoder 4,058,340.
    _round_trip("vit_b", tmp_path, (89_670_912, 6_220, 4_058_340))


@pytest.mark.slow
def test_vit_l_parameter_counts_and_checkpoint_round_trip(tmp_path):
    _round_trip("vit_l", tmp_path, (308_278_272, 6_220, 4_058_340))


@pytest.mark.slow
def test_vit_h_parameter_counts_and_checkpoint_round_trip(tmp_path):
    _round_trip("vit_h", tmp_path, (637_026_048, 6_220, 4_058_340))


def test_checkpoint_of_another_size_is_refused(tmp_path):
    torch.save(build_sam("tiny").state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError) as err:
        SamSegmenter.from_config("tiny", checkpoint=tmp_path / "tiny.pth", image_size=64)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {tmp_path / 'tiny.pth'} does not fit Sam: ")
    assert "shape mismatches (image_encoder.pos_embed: ckpt [1,16,16,32] vs model [1,8,8,32]" in msg


def test_checkpoint_with_foreign_keys_is_refused(tmp_path):
    sd = build_sam("tiny").state_dict()
    sd["ema.step"] = torch.zeros(1)
    torch.save(sd, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"1 checkpoint keys match no mapping rule \(ema\.step\)"):
        build_sam("tiny", checkpoint=tmp_path / "tiny.pth")


def test_segmenter_loads_the_official_layout(tmp_path):
    torch.manual_seed(3)
    sd = build_sam("tiny").state_dict()
    torch.save({"model": sd}, tmp_path / "wrapped.pth")
    model = _tiny(seed=4)
    assert list(model.state_dict()) == list(sd)  # same key layout as the official checkpoint
    model2 = SamSegmenter.from_config("tiny", checkpoint=tmp_path / "wrapped.pth")
    assert torch.equal(model2.image_encoder.pos_embed, sd["image_encoder.pos_embed"])
    assert torch.equal(model2.mask_decoder.mask_tokens.weight, sd["mask_decoder.mask_tokens.weight"])
