"""SAM-Path model: batched class-token decoding, neck, switches, and exact gradient-receiving counts."""

from __future__ import annotations

import pytest
import torch
from pathseg_sampath.model import SamPathConfigError, SamPathSegmenter, build_neck, class_prompt_decoder
from pathseg_sampath.task import SamPathTask

from pathseg_core.models.adapters import count_parameters
from pathseg_core.models.sam import SAM_CONFIGS, build_sam

#: Parameters that receive a gradient (full-size ViT-B SAM + ViT-S/16 HIPT), per configuration.
#: (num_classes, loss_preset, encoders, code_preset) -> count; README "Parameter counts".
GRAD_COUNTS = {
    (5, "bcss", "both", "paper"): 5_084_421,
    (2, "crag", "both", "paper"): 4_531_360,
    (5, "bcss", "both", "official_code"): 5_084_934,
    (2, "crag", "both", "official_code"): 4_531_616,
}


def tiny(num_classes: int = 3, **kwargs) -> SamPathSegmenter:
    torch.manual_seed(0)
    return SamPathSegmenter.build(num_classes, sam="tiny", hipt="tiny", **kwargs)


def test_neck_count_by_hand():
    # Conv1x1 1152*256 + LN 2*256 + Conv3x3 256*256*9 + LN 2*256
    assert count_parameters(build_neck(768 + 384, 256)) == 1152 * 256 + 512 + 256 * 256 * 9 + 512 == 885_760
    assert not any(m.bias is not None for m in build_neck(8, 4) if isinstance(m, torch.nn.Conv2d))


def test_batched_decoder_matches_segment_anything_per_image():
    """class_tokens_forward == segment_anything's MaskDecoder.predict_masks run image by image."""
    model = tiny(4).eval()
    feats = model.encode(torch.rand(2, 3, 128, 128) * 255)
    logits, iou = model.class_tokens_forward(feats["embedding"])
    dec, pe = model.mask_decoder, model.prompt_encoder
    for i in range(2):
        sparse, dense = pe(points=None, boxes=None, masks=None)
        ref_logits, ref_iou = dec.predict_masks(
            model.neck(feats["embedding"][i : i + 1]), pe.get_dense_pe(), sparse, dense
        )
        torch.testing.assert_close(logits[i : i + 1], ref_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(iou[i : i + 1], ref_iou, atol=1e-5, rtol=1e-5)


def test_extra_token_output_is_dropped():
    model = tiny(3, extra_token=True).eval()
    assert model.mask_decoder.num_mask_tokens == 4
    feats = model.encode(torch.rand(1, 3, 128, 128) * 255)
    full, iou = model.class_tokens_forward(feats["embedding"])
    pred = model.decode(feats)
    assert torch.equal(pred.mask_logits, full[:, 1:]) and torch.equal(pred.iou_pred, iou[:, 1:])


@pytest.mark.parametrize(("encoders", "channels"), [("both", 32 + 24), ("sam", 32), ("hipt", 24)])
def test_encoder_switches(encoders, channels):
    model = tiny(3, encoders=encoders)
    feats = model.encode(torch.rand(1, 3, 96, 128) * 255)
    assert feats["embedding"].shape == (1, channels, 16, 16)
    pred = model.decode(feats)
    assert pred.mask_logits.shape == (1, 3, 48, 64)  # 4x the 16 grid, cropped to the 96x128 extent
    assert (model.hipt is None) == (encoders == "sam")


def test_hipt_grid_must_match_sam_grid():
    with pytest.raises(SamPathConfigError, match="not SAM's 16x16"):
        SamPathSegmenter.build(3, sam="tiny", hipt="vit_s16")  # patch 16 on 128 px -> 8x8


def test_pretrained_decoder_is_transplanted():
    cfg = SAM_CONFIGS["tiny"]
    source = build_sam(cfg).mask_decoder
    dec = class_prompt_decoder(cfg, 4, source)
    for i in range(4):
        for (k, v), (_, ref) in zip(
            dec.output_hypernetworks_mlps[i].state_dict().items(),
            source.output_hypernetworks_mlps[0].state_dict().items(),
        ):
            assert torch.equal(v, ref), k
    assert torch.equal(
        dec.transformer.layers[0].self_attn.q_proj.weight, source.transformer.layers[0].self_attn.q_proj.weight
    )
    assert dec.iou_prediction_head.layers[-1].out_features == 4


def _gradient_count(task: SamPathTask, num_classes: int) -> int:
    """Elements of the parameters that get a gradient from one real loss backward.

    The encoders are frozen and run under no_grad, so a random embedding stands in for them.
    """
    model = task.model
    g = torch.Generator().manual_seed(0)
    feats = {"embedding": torch.randn(1, 1152, 64, 64, generator=g), "input_hw": torch.tensor([[1024, 1024]])}
    pred = model.decode(feats)
    labels = torch.randint(0, num_classes, (1, 256, 256), generator=g)
    task.loss_fn(pred.mask_logits, labels=labels, iou_pred=pred.iou_pred)["loss"].backward()
    return sum(p.numel() for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0)


@pytest.mark.parametrize(("key", "expected"), list(GRAD_COUNTS.items()))
def test_full_size_gradient_counts(key, expected):
    k, loss_preset, encoders, code_preset = key
    torch.set_num_threads(1)
    task = SamPathTask(
        sam_backbone="vit_b",
        hipt_backbone="vit_s16",
        num_classes=k,
        loss_preset=loss_preset,
        encoders=encoders,
        code_preset=code_preset,
    )
    assert count_parameters(task.model.neck) == 885_760
    assert _gradient_count(task, k) == expected
    assert count_parameters(task.model, trainable_only=True) == expected  # requires_grad == receives a gradient
