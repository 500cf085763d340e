import math

import pytest
import torch

import pathseg_core  # noqa: F401  (arms the torchvision fallback first)
from pathseg_core.losses import (
    LossInputError,
    SegmentationLoss,
    bce_loss,
    cross_entropy_loss,
    dice_loss,
    iou_mse_loss,
    semantic_to_onehot,
    sigmoid_focal_loss,
)

LN2, LN3 = math.log(2.0), math.log(3.0)

# One channel, 1x4 pixels. sigmoid(±ln 3) = 0.75 / 0.25, so p = [.75, .25, .75, .25].
LOGITS = torch.tensor([LN3, -LN3, LN3, -LN3]).view(1, 1, 1, 4)
TARGET = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)


def test_dice_hand_computed():
    # Σpt = .75, Σp = 2, Σt = 1, smooth 1: 1 - (1.5 + 1) / (3 + 1) = 0.375
    assert dice_loss(LOGITS, TARGET).item() == pytest.approx(0.375)
    # squared: Σp² = .5625 + .0625 + .5625 + .0625 = 1.25, Σt² = 1: 1 - 2.5 / 3.25
    assert dice_loss(LOGITS, TARGET, squared=True).item() == pytest.approx(1 - 2.5 / 3.25)
    # smooth 0: 1 - 1.5 / 3 = 0.5
    assert dice_loss(LOGITS, TARGET, smooth=0.0).item() == pytest.approx(0.5)


def test_dice_mask_drops_pixel():
    # mask out pixel 2 (p = .75, t = 0): Σpt = .75, Σp = 1.25, Σt = 1 -> 1 - 2.5 / 3.25
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 4)
    assert dice_loss(LOGITS, TARGET, mask).item() == pytest.approx(1 - 2.5 / 3.25)
    # mask out pixel 1 (p = .25, t = 0): Σp = 1.75 -> 1 - 2.5 / 3.75 = 1/3
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4)
    assert dice_loss(LOGITS, TARGET, mask).item() == pytest.approx(1 / 3)


def test_dice_softmax_across_channels():
    # two channels of equal logits: softmax gives p = 0.5 everywhere.
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    # each channel: Σpt = .5, Σp = 1, Σt = 1 -> 1 - 2 / 3 = 1/3
    assert dice_loss(logits, target, activation="softmax").item() == pytest.approx(1 / 3)


def test_dice_reduction_none_and_padded_channel():
    logits = LOGITS.repeat(1, 2, 1, 1)
    target = TARGET.repeat(1, 2, 1, 1)
    logits[:, 1] = 5.0  # channel 1 is a padded slot with garbage
    valid = torch.tensor([[True, False]])[:, :, None, None]
    per = dice_loss(logits, target, valid, reduction="none")
    assert per.shape == (1, 2)
    assert per[0, 0].item() == pytest.approx(0.375)
    assert per[0, 1].item() == 0.0
    assert dice_loss(logits, target, valid).item() == pytest.approx(0.375)
    assert dice_loss(logits, target, valid, reduction="sum").item() == pytest.approx(0.375)


def test_focal_hand_computed():
    # pixel a: logit 0, t 1: p_t = .5, ce = ln2, (1 - p_t)^2 = .25 -> .25 ln2
    # pixel b: logit ln3, t 0: p = .75, p_t = .25, ce = ln4, (.75)^2 = .5625 -> .5625 ln4
    logits = torch.tensor([0.0, LN3]).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    expected = (0.25 * LN2 + 0.5625 * 2 * LN2) / 2
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(expected)
    # alpha .25: α_t = .25 for a, .75 for b
    expected = (0.25 * 0.25 * LN2 + 0.75 * 0.5625 * 2 * LN2) / 2
    assert sigmoid_focal_loss(logits, target, alpha=0.25).item() == pytest.approx(expected)
    # gamma 0 is plain BCE: (ln2 + ln4) / 2
    assert sigmoid_focal_loss(logits, target, gamma=0.0).item() == pytest.approx(1.5 * LN2)


def test_bce_hand_computed_and_mask():
    logits = torch.tensor([0.0, LN3]).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert bce_loss(logits, target).item() == pytest.approx(1.5 * LN2)  # (ln2 + ln4) / 2
    mask = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    assert bce_loss(logits, target, mask).item() == pytest.approx(2 * LN2)  # ln4 only


def test_cross_entropy_hand_computed():
    # pixel a: logits [ln2, 0, 0], label 0: softmax 2/4 -> ln2
    # pixel b: logits [0, 0, 0], label 1: 1/3 -> ln3;  pixel c: ignored
    logits = torch.tensor([[LN2, 0.0, 5.0], [0.0, 0.0, -5.0], [0.0, 0.0, 0.0]]).view(1, 3, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    assert cross_entropy_loss(logits, labels).item() == pytest.approx((LN2 + LN3) / 2)
    # weights [1, 3, 1]: (1·ln2 + 3·ln3) / (1 + 3)
    got = cross_entropy_loss(logits, labels, class_weights=[1.0, 3.0, 1.0]).item()
    assert got == pytest.approx((LN2 + 3 * LN3) / 4)
    # everything ignored: 0, still differentiable
    logits.requires_grad_(True)
    out = cross_entropy_loss(logits, torch.full_like(labels, 255))
    assert out.item() == 0.0
    out.backward()


def test_iou_mse_hand_computed():
    # channel 0: pred = logits > 0 = [[1,1],[0,0]], target [[1,0],[1,0]]: IoU = 1/3
    # channel 1: masked out (padded slot)
    logits = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    iou_pred = torch.tensor([[0.5, 0.9]])
    valid = torch.tensor([[True, False]])[:, :, None, None]
    assert iou_mse_loss(iou_pred, logits, target, valid).item() == pytest.approx((0.5 - 1 / 3) ** 2)
    # both channels count: ((1/6)² + (0.9 - 1/3)²) / 2
    both = ((0.5 - 1 / 3) ** 2 + (0.9 - 1 / 3) ** 2) / 2
    assert iou_mse_loss(iou_pred, logits, target).item() == pytest.approx(both)
    # empty prediction and empty target: IoU = empty_iou
    empty = iou_mse_loss(torch.tensor([[0.75]]), -torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert empty.item() == pytest.approx(0.25**2)


def test_iou_mse_gradient_only_through_iou_pred():
    logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    iou_pred = torch.rand(1, 1, requires_grad=True)
    iou_mse_loss(iou_pred, logits, (torch.rand(1, 1, 4, 4) > 0.5).float()).backward()
    assert iou_pred.grad is not None and iou_pred.grad.abs().sum() > 0
    assert logits.grad is None


def test_semantic_to_onehot():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    onehot, valid = semantic_to_onehot(labels, 3)
    assert onehot.shape == (1, 3, 2, 2) and valid.shape == (1, 1, 2, 2)
    assert valid.tolist() == [[[[True, True], [False, True]]]]
    assert onehot[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert onehot[0, :, 0, 1].tolist() == [0.0, 0.0, 1.0]
    assert onehot[0, :, 1, 0].tolist() == [0.0, 0.0, 0.0]
    assert onehot[0, :, 1, 1].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(LossInputError, match="outside"):
        semantic_to_onehot(torch.tensor([[[3]]]), 3)


@pytest.mark.parametrize("fn", [dice_loss, sigmoid_focal_loss, bce_loss])
def test_ignore_pixels_do_not_change_loss(fn):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = (torch.rand(2, 3, 8, 8, generator=g) > 0.5).float()
    mask = torch.rand(2, 1, 8, 8, generator=g) > 0.3
    base = fn(logits, target, mask)
    logits2, target2 = logits.clone(), target.clone()
    logits2[~mask.expand_as(logits)] = 37.0
    target2[~mask.expand_as(target)] = 1.0 - target2[~mask.expand_as(target)]
    assert fn(logits2, target2, mask).item() == pytest.approx(base.item(), rel=1e-6)


def test_segmentation_loss_sums_weighted_terms():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = (torch.rand(2, 3, 8, 8, generator=g) > 0.5).float()
    iou_pred = torch.rand(2, 3, generator=g)
    loss = SegmentationLoss(dice=2.0, focal=3.0, bce=0.5, iou_mse=4.0, focal_alpha=0.25)
    out = loss(logits, target, iou_pred=iou_pred)
    assert set(out) == {"dice", "focal", "bce", "iou_mse", "loss"}
    assert out["dice"].item() == pytest.approx(2.0 * dice_loss(logits, target).item())
    assert out["focal"].item() == pytest.approx(3.0 * sigmoid_focal_loss(logits, target, alpha=0.25).item())
    assert out["bce"].item() == pytest.approx(0.5 * bce_loss(logits, target).item())
    assert out["iou_mse"].item() == pytest.approx(4.0 * iou_mse_loss(iou_pred, logits, target).item())
    parts = out["dice"] + out["focal"] + out["bce"] + out["iou_mse"]
    assert out["loss"].item() == pytest.approx(parts.item())


def test_segmentation_loss_skip_channels_equals_sliced_channels():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 6, 6, generator=g)
    target = (torch.rand(1, 3, 6, 6, generator=g) > 0.5).float()
    full = SegmentationLoss(dice=1.0, bce=1.0, skip_channels=(0,))(logits, target)
    sliced = SegmentationLoss(dice=1.0, bce=1.0)(logits[:, 1:], target[:, 1:])
    assert full["loss"].item() == pytest.approx(sliced["loss"].item())


def test_segmentation_loss_semantic_labels():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    labels = torch.randint(0, 3, (2, 5, 5), generator=g)
    labels[0, 0, :] = 255
    loss = SegmentationLoss(dice=1.0, bce=1.0, ce=2.0)
    out = loss(logits, labels=labels)
    onehot, valid = semantic_to_onehot(labels, 3)
    assert out["dice"].item() == pytest.approx(dice_loss(logits, onehot, valid).item())
    assert out["bce"].item() == pytest.approx(bce_loss(logits, onehot, valid).item())
    assert out["ce"].item() == pytest.approx(2.0 * cross_entropy_loss(logits, labels).item())
    # skipping class 0 drops its pixels from CE, as SAM-Path's CrossEntropyLoss(ignore_index=0)
    skipped = SegmentationLoss(dice=0.0, bce=0.0, ce=1.0, skip_channels=(0,))(logits, labels=labels)
    masked = torch.where(labels == 0, 255, labels)
    assert skipped["ce"].item() == pytest.approx(cross_entropy_loss(logits, masked).item())
    # changing logits under ignore pixels does not change any term
    logits2 = logits.clone()
    logits2[0, :, 0, :] = 50.0
    out2 = loss(logits2, labels=labels)
    assert out2["loss"].item() == pytest.approx(out["loss"].item())


def test_segmentation_loss_gradient_flows_and_padded_slots_get_none():
    logits = torch.randn(1, 2, 6, 6, requires_grad=True)
    target = (torch.rand(1, 2, 6, 6) > 0.5).float()
    valid = torch.tensor([[True, False]])[:, :, None, None]
    out = SegmentationLoss(dice=1.0, focal=1.0, bce=1.0)(logits, target, valid)
    out["loss"].backward()
    assert logits.grad[0, 0].abs().sum() > 0
    assert logits.grad[0, 1].abs().sum() == 0


def test_segmentation_loss_all_masked_is_zero_with_graph():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    out = SegmentationLoss(dice=1.0, focal=1.0, bce=1.0)(logits, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 1, 1))
    assert out["loss"].item() == 0.0
    out["loss"].backward()


def test_segmentation_loss_errors():
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    with pytest.raises(LossInputError, match="labels"):
        SegmentationLoss(ce=1.0)(logits, target)
    with pytest.raises(LossInputError, match="iou_pred"):
        SegmentationLoss(iou_mse=1.0)(logits, target)
    with pytest.raises(LossInputError, match="target"):
        SegmentationLoss()(logits)
    with pytest.raises(LossInputError, match="match"):
        SegmentationLoss()(logits, torch.zeros(1, 3, 4, 4))
    with pytest.raises(LossInputError, match="skip_channels"):
        SegmentationLoss(skip_channels=(5,))(logits, target)
    with pytest.raises(LossInputError, match=">= 0"):
        SegmentationLoss(dice=-1.0)
