"""The official SAM-Path code's metric definitions, as a compatibility mode.

The official code (``main.py`` ``get_metrics``) scores with torchmetrics over ``K + 1`` labels
(an extra, never-present one) with ``ignore_index = 0`` (unlabelled), predictions being the
argmax over the real channels. In pathseg's label layout (classes ``0..K-1``, unlabelled =
``ignore_index``) that gives, with ``d`` the class whose ground-truth pixels the official code
drops before scoring (CRAG: background, ``ignored_classes_metric``; BCSS: none):

* ``official_dice`` (their micro ``Dice`` / ``F1``) = ``Σ_{c≠d} TP_c / Σ_{c≠d} (TP_c + FN_c)``:
  pixel accuracy on labelled pixels (BCSS), foreground recall (binary);
* ``official_iou`` (their micro ``IOU_Jaccard``) = ``Σ TP / Σ (TP + FP + FN)`` over ``c ≠ d``:
  ``acc / (2 - acc)`` for BCSS, recall for binary;
* ``official_dice_bal`` / ``official_iou_bal`` (their ``*_Bal``, macro) = the per-class scores
  summed over ``c ≠ d`` and divided by ``K + 1`` (the extra label counts as a class scoring 0).

The correct micro / macro Dice and IoU stay in the core metrics beside these.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from pathseg_core.metrics import ClassSubsetScore

__all__ = ["OfficialScore", "official_metrics"]

Definition = Literal["dice", "iou", "dice_bal", "iou_bal"]


class OfficialScore(ClassSubsetScore):
    """One of the official code's scores (module docstring), from pooled per-class counts.

    Args:
        num_classes: ``K`` classes of pathseg's layout.
        definition: ``dice``, ``iou``, ``dice_bal`` or ``iou_bal``.
        dropped_class: class whose target pixels are dropped before scoring (binary: 0), or None.
        ignore_index: unlabelled target value.
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(
        self,
        num_classes: int,
        definition: Definition = "dice",
        dropped_class: int | None = None,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        classes = [c for c in range(num_classes) if c != dropped_class]
        score = "dice" if definition.startswith("dice") else "iou"
        super().__init__(num_classes, score=score, average="none", classes=classes, ignore_index=ignore_index, **kwargs)
        self.definition = definition
        self.dropped_class = dropped_class

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds`` / ``target`` ``[B, H, W]`` class ids; dropped-class targets count nowhere."""
        if self.dropped_class is not None:
            target = torch.where(target == self.dropped_class, torch.full_like(target, self.ignore_index), target)
        super().update(preds, target)

    def compute(self) -> Tensor:
        """The chosen official score."""
        tp, fp, fn = (x.float()[self.classes] for x in (self.tp, self.fp, self.fn))
        if self.definition == "dice":
            return tp.sum() / (tp + fn).sum().clamp(min=1)
        if self.definition == "iou":
            return tp.sum() / (tp + fp + fn).sum().clamp(min=1)
        return super().compute().sum() / (self.num_classes + 1)


def official_metrics(num_classes: int, dropped_class: int | None, ignore_index: int) -> dict[str, OfficialScore]:
    """``{"official_dice", "official_iou", "official_dice_bal", "official_iou_bal"}`` metrics."""
    return {
        f"official_{d}": OfficialScore(num_classes, d, dropped_class, ignore_index)
        for d in ("dice", "iou", "dice_bal", "iou_bal")
    }
