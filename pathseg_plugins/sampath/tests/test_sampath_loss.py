"""SAM-Path loss (paper eq. 3) against hand computations; ignore handling switch."""

from __future__ import annotations

import math

import pytest
import torch
from pathseg_sampath.loss import SamPathLoss

from pathseg_core.losses import LossInputError

# Two classes, 1x2 image: pixel 0 is class 0, pixel 1 is class 1.
LOGITS = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
LABELS = torch.tensor([[[0, 1]]])
S = 1e-5  # MONAI smoothing


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def focal(x: float, t: int) -> float:
    p = sig(x)
    pt = p if t else 1 - p
    return -((1 - pt) ** 2) * math.log(pt)


def test_dice_and_focal_by_hand():
    # softmax: pixel 0 -> (0.75, 0.25); pixel 1 -> (0.5, 0.5)
    dice0 = 1 - (2 * 0.75 + S) / ((0.75 + 0.5) + 1 + S)
    dice1 = 1 - (2 * 0.5 + S) / ((0.25 + 0.5) + 1 + S)
    fl = (focal(math.log(3), 1) + focal(0, 0) + focal(0, 0) + focal(0, 1)) / 4
    out = SamPathLoss(alpha=0.25, beta=0.0)(LOGITS, labels=LABELS)
    assert out["dice"].item() == pytest.approx(0.75 * (dice0 + dice1) / 2, rel=1e-6)
    assert out["focal"].item() == pytest.approx(0.25 * fl, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.75 * (dice0 + dice1) / 2 + 0.25 * fl, rel=1e-6)


def test_iou_mse_by_hand():
    # thresholded softmax >= 0.5: class 0 -> {p0, p1}, class 1 -> {p1}; IoU 1/2 and 1/1
    iou_pred = torch.tensor([[0.5, 0.0]])
    out = SamPathLoss(alpha=0.25, beta=0.0625)(LOGITS, labels=LABELS, iou_pred=iou_pred)
    assert out["iou_mse"].item() == pytest.approx(0.0625 * ((0.5 - 0.5) ** 2 + (0.0 - 1.0) ** 2) / 2)


def test_ignore_modes_by_hand():
    """'mask' drops ignored pixels; 'zero_logits' keeps them with logit 0 and an all-zero target."""
    labels = torch.tensor([[[0, 255]]])
    logits = torch.tensor([[[[math.log(3.0), 5.0]], [[0.0, -5.0]]]])
    masked = SamPathLoss(alpha=1.0, beta=0.0)(logits, labels=labels)
    assert masked["focal"].item() == pytest.approx((focal(math.log(3), 1) + focal(0, 0)) / 2, rel=1e-6)
    zeroed = SamPathLoss(alpha=1.0, beta=0.0, ignore_mode="zero_logits")(logits, labels=labels)
    assert zeroed["focal"].item() == pytest.approx((focal(math.log(3), 1) + focal(0, 0) + 2 * focal(0, 0)) / 4)
    d = SamPathLoss(alpha=0.0, beta=0.0, ignore_mode="zero_logits")(logits, labels=labels)["dice"].item()
    dice0 = 1 - (2 * 0.75 + S) / ((0.75 + 0.5) + 1 + S)
    dice1 = 1 - S / ((0.25 + 0.5) + 0 + S)
    assert d == pytest.approx((dice0 + dice1) / 2, rel=1e-6)


def test_gradient_only_through_logits_and_iou():
    logits = LOGITS.clone().requires_grad_(True)
    iou = torch.zeros(1, 2, requires_grad=True)
    SamPathLoss()(logits, labels=LABELS, iou_pred=iou)["loss"].backward()
    assert logits.grad.abs().sum() > 0 and iou.grad.abs().sum() > 0


def test_bad_arguments_are_one_line():
    with pytest.raises(LossInputError, match="0 <= alpha <= 1"):
        SamPathLoss(alpha=1.5)
    with pytest.raises(LossInputError, match="needs iou_pred"):
        SamPathLoss(beta=0.5)(LOGITS, labels=LABELS)
    with pytest.raises(LossInputError, match="outside"):
        SamPathLoss()(LOGITS, labels=torch.tensor([[[0, 3]]]))
