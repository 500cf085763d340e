"""SAM-Path's loss (paper eq. 3), built from the core loss terms.

``L = (1 - α) · L_dice + α · L_focal + β · L_mse``, per class channel:

* ``L_dice``: soft Dice on the **softmax** over class channels (MONAI ``DiceLoss``, smooth 1e-5);
* ``L_focal``: **sigmoid** focal loss per channel, ``γ = 2``, no ``α`` weighting (MONAI ``FocalLoss``);
* ``L_mse``: MSE between each class token's predicted IoU and the IoU of its thresholded
  (softmax ``>= 0.5``) mask.

Unlabelled pixels (``ignore_index``) either get zero weight in every term (``ignore_mode="mask"``,
pathseg's default) or are handled as the official code does (``"zero_logits"``: their logits are
set to 0 and their one-hot target is all-zero, and they stay in every mean — constant terms
that dilute the focal mean and add ``1/K`` to every Dice denominator).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pathseg_core.contracts import IGNORE_INDEX
from pathseg_core.losses import LossInputError, SegmentationLoss, iou_mse_loss, semantic_to_onehot

__all__ = ["IgnoreMode", "SamPathLoss"]

IgnoreMode = Literal["mask", "zero_logits"]


class SamPathLoss(nn.Module):
    """``(1 - α) Dice + α Focal + β IoU-MSE`` over class channels (paper eq. 3).

    Args:
        alpha: focal weight ``α`` (BCSS 0.25, CRAG 0.125 — paper Fig. 4).
        beta: IoU-MSE weight ``β`` (BCSS 0.0625, CRAG 0).
        ignore_mode: ``"mask"`` or ``"zero_logits"`` (module docstring).
        skip_channels: channels left out of every term (e.g. an "unlabelled" channel 0 in the
            official label layout); they still take part in the softmax.
        dice_smooth: Dice smoothing (MONAI's 1e-5).
        focal_gamma: focal ``γ``.
        empty_iou: IoU target when a class is absent from both prediction and target (the
            official ``calc_iou`` gives 0, pathseg's default 1).
    """

    def __init__(
        self,
        alpha: float = 0.25,
        beta: float = 0.0625,
        ignore_mode: IgnoreMode = "mask",
        skip_channels: tuple[int, ...] = (),
        dice_smooth: float = 1e-5,
        focal_gamma: float = 2.0,
        empty_iou: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or beta < 0:
            raise LossInputError(f"SamPathLoss needs 0 <= alpha <= 1 and beta >= 0, got alpha={alpha}, beta={beta}")
        if ignore_mode not in ("mask", "zero_logits"):
            raise LossInputError(f"ignore_mode must be 'mask' or 'zero_logits', got {ignore_mode!r}")
        self.terms = SegmentationLoss(
            dice=1.0 - alpha,
            focal=alpha,
            bce=0.0,
            iou_mse=0.0,
            dice_smooth=dice_smooth,
            focal_gamma=focal_gamma,
            skip_channels=skip_channels,
            activation="softmax",
        )
        self.beta = beta
        self.ignore_mode: IgnoreMode = ignore_mode
        self.empty_iou = empty_iou

    def forward(
        self,
        logits: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
        iou_pred: Tensor | None = None,
        labels: Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> dict[str, Tensor]:
        """Loss terms for semantic labels (the signature of the core ``SegmentationLoss``).

        Args:
            logits: ``[B, K, H, W]`` class logits.
            target: unused (targets come from ``labels``); must be None.
            mask: unused; must be None.
            iou_pred: ``[B, K]`` predicted IoU (needed when ``beta > 0``).
            labels: ``[B, H, W]`` class ids or ``ignore_index``.
            ignore_index: label value of unlabelled pixels.

        Returns:
            ``{"dice", "focal", ["iou_mse"], "loss"}``, each already weighted.
        """
        if labels is None or target is not None or mask is not None:
            raise LossInputError("SamPathLoss takes semantic labels= only (no target= / mask=)")
        onehot, valid = semantic_to_onehot(labels, logits.shape[1], ignore_index)
        if self.ignore_mode == "zero_logits":
            logits = logits * valid.to(logits.dtype)
            pixel_w = torch.ones_like(valid, dtype=torch.float32)
        else:
            pixel_w = valid.float()
        out = self.terms(logits, onehot, mask=pixel_w)
        if self.beta:
            if iou_pred is None:
                raise LossInputError("SamPathLoss with beta > 0 needs iou_pred [B, K]")
            w = pixel_w * self.terms._channel_weights(logits)
            out["iou_mse"] = self.beta * iou_mse_loss(
                iou_pred, logits, onehot, w, activation="softmax", empty_iou=self.empty_iou
            )
        out["loss"] = sum((v for k, v in out.items() if k != "loss"), logits.sum() * 0.0)
        return out
