"""Official-code metric definitions (compatibility mode) against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from pathseg_sampath.metrics import OfficialScore, official_metrics


def scores(preds, target, k, dropped=None):
    ms = official_metrics(k, dropped, 255)
    for m in ms.values():
        m.update(torch.tensor(preds), torch.tensor(target))
    return {name: m.compute().item() for name, m in ms.items()}


def test_multiclass_official_definitions_by_hand():
    # 3 classes, 6 labelled pixels + 1 unlabelled; 4 correct -> accuracy 4/6
    target = [[[0, 0, 1, 1, 2, 2, 255]]]
    preds = [[[0, 1, 1, 1, 2, 0, 2]]]
    s = scores(preds, target, 3)
    acc = 4 / 6
    assert s["official_dice"] == pytest.approx(acc)
    assert s["official_iou"] == pytest.approx(acc / (2 - acc))
    iou = [1 / 3, 2 / 3, 1 / 2]  # class 0: tp1 fp1 fn1; class 1: tp2 fp1; class 2: tp1 fn1
    dice = [2 / 4, 4 / 5, 2 / 3]
    assert s["official_iou_bal"] == pytest.approx(sum(iou) / 4)  # divided by K + 1
    assert s["official_dice_bal"] == pytest.approx(sum(dice) / 4)


def test_binary_official_scores_are_recall():
    # background 0 is dropped: its false positives vanish, Dice = IoU = recall of class 1
    target = [[[0, 0, 0, 1, 1, 1, 1]]]
    preds = [[[1, 1, 0, 1, 1, 1, 0]]]
    s = scores(preds, target, 2, dropped=0)
    assert s["official_dice"] == pytest.approx(3 / 4)
    assert s["official_iou"] == pytest.approx(3 / 4)
    assert s["official_iou_bal"] == pytest.approx((3 / 4) / 3)


def test_paper_bcss_iou_is_micro_of_its_dice():
    """Table 1's BCSS IoU 0.6596 is acc / (2 - acc) of its Dice 0.7949: both are micro scores."""
    acc = 0.7949
    assert round(acc / (2 - acc), 4) == 0.6596
    m = OfficialScore(2, "iou")
    m.update(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 1, 1, 0]]))
    assert m.compute().item() == pytest.approx(0.75 / 1.25)
