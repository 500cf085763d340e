"""Segmentation losses: Dice, sigmoid focal, BCE, cross-entropy, IoU-MSE, and a weighted sum.

Conventions shared by every function here:

* ``logits`` ``[B, N, H, W]``: one channel per prompt slot, or one per class for semantic
  models; raw scores, never probabilities.
* ``target`` ``[B, N, H, W]`` in ``{0, 1}`` (float or bool).
* ``mask`` (optional) broadcastable to ``[B, N, H, W]``, bool or float: the weight of each
  pixel. Ignore pixels and padded prompt slots get ``0``; e.g. pass
  ``valid[:, :, None, None]`` for padded slots and ``(labels != 255)[:, None]`` for
  ignore pixels, or their product.
* Dice and IoU-MSE are per channel ``(b, n)``; a channel whose mask is all zero does not
  count (it is left out of the mean, not counted as 0). Focal and BCE are means over the
  pixels that count (mask-weighted), over all channels together.
* Every loss is computed in float32 and returns a scalar that stays in the autograd graph
  even when nothing counts (then it is ``0``).

Where the papers' code differs: MONAI's ``DiceLoss`` (used by WSI-SAM and SAM-Path) uses
``smooth = 1e-5`` and counts every channel; pass ``smooth=1e-5`` for its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pathseg_core.contracts import IGNORE_INDEX

__all__ = [
    "LossInputError",
    "SegmentationLoss",
    "bce_loss",
    "cross_entropy_loss",
    "dice_loss",
    "iou_mse_loss",
    "semantic_to_onehot",
    "sigmoid_focal_loss",
]

Activation = Literal["sigmoid", "softmax"]
Reduction = Literal["mean", "sum", "none"]


class LossInputError(ValueError):
    """Inputs to a loss whose shapes or values do not fit together."""


def _weights(logits: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Float32 ``[B, N, H, W]`` pixel weights from an optional broadcastable ``mask``."""
    if logits.dim() != 4:
        raise LossInputError(f"logits must be [B, N, H, W], got {list(logits.shape)}")
    if target.shape != logits.shape:
        raise LossInputError(f"target {list(target.shape)} must match logits {list(logits.shape)}")
    if mask is None:
        return torch.ones_like(logits, dtype=torch.float32)
    try:
        return mask.to(device=logits.device, dtype=torch.float32).expand_as(logits)
    except RuntimeError as err:
        raise LossInputError(
            f"mask {list(mask.shape)} does not broadcast to logits {list(logits.shape)}: give [B, N|1, H|1, W|1]"
        ) from err


def _probabilities(logits: Tensor, activation: Activation) -> Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    if activation == "softmax":
        return torch.softmax(logits.float(), dim=1)
    raise LossInputError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


def _reduce_channels(per_channel: Tensor, counts: Tensor, reduction: Reduction) -> Tensor:
    """Reduce ``[B, N]`` per-channel losses over the channels where ``counts`` is true."""
    if reduction == "none":
        return per_channel * counts
    total = (per_channel * counts).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / counts.sum().clamp(min=1)
    raise LossInputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dice_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    smooth: float = 1.0,
    squared: bool = False,
    reduction: Reduction = "mean",
    activation: Activation = "sigmoid",
) -> Tensor:
    """Soft Dice loss per channel: ``1 - (2 Σ w p t + s) / (Σ w p + Σ w t + s)``.

    Args:
        logits: ``[B, N, H, W]`` raw scores.
        target: ``[B, N, H, W]`` in ``{0, 1}``.
        mask: pixel weights broadcastable to ``logits`` (0 = does not count).
        smooth: ``s``, added to numerator and denominator.
        squared: MONAI's ``squared_pred``: denominator ``Σ w p² + Σ w t²`` (WSI-SAM's code).
        reduction: ``"mean"`` over the channels with any weight, ``"sum"``, or ``"none"``
            (``[B, N]``, zero where a channel does not count).
        activation: ``"sigmoid"`` per channel, or ``"softmax"`` across channels (SAM-Path).

    Returns:
        Scalar loss (or ``[B, N]`` for ``reduction="none"``).
    """
    w = _weights(logits, target, mask)
    p = _probabilities(logits, activation)
    t = target.float()
    inter = (w * p * t).sum(dim=(2, 3))
    if squared:
        denom = (w * p * p).sum(dim=(2, 3)) + (w * t * t).sum(dim=(2, 3))
    else:
        denom = (w * p).sum(dim=(2, 3)) + (w * t).sum(dim=(2, 3))
    per_channel = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    counts = (w.sum(dim=(2, 3)) > 0).float()
    return _reduce_channels(per_channel, counts, reduction)


def _masked_pixel_mean(per_pixel: Tensor, w: Tensor) -> Tensor:
    return (per_pixel * w).sum() / w.sum().clamp(min=torch.finfo(torch.float32).tiny)


def sigmoid_focal_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mask-weighted mean over pixels.

    Per pixel: ``-α_t (1 - p_t)^γ log p_t`` with ``p_t = p`` where ``t = 1`` and
    ``1 - p`` where ``t = 0``; ``α_t = α`` / ``1 - α`` likewise, or 1 when ``alpha`` is None.

    Args:
        logits: ``[B, N, H, W]`` raw scores.
        target: ``[B, N, H, W]`` in ``{0, 1}``.
        mask: pixel weights broadcastable to ``logits``.
        gamma: focusing exponent ``γ`` (0 gives plain BCE).
        alpha: positive-class weight ``α`` in ``[0, 1]``, or None for no class weighting.

    Returns:
        Scalar: ``Σ w · loss / Σ w``.
    """
    w = _weights(logits, target, mask)
    x = logits.float()
    t = target.float()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1.0 - p) * (1.0 - t)
    loss = ce * (1.0 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * t + (1.0 - alpha) * (1.0 - t))
    return _masked_pixel_mean(loss, w)


def bce_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits, mask-weighted mean over pixels.

    Args:
        logits: ``[B, N, H, W]`` raw scores.
        target: ``[B, N, H, W]`` in ``{0, 1}``.
        mask: pixel weights broadcastable to ``logits``.

    Returns:
        Scalar: ``Σ w · BCE / Σ w``.
    """
    w = _weights(logits, target, mask)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return _masked_pixel_mean(per_pixel, w)


def cross_entropy_loss(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Softmax cross-entropy for semantic maps; ``ignore_index`` pixels do not count.

    Args:
        logits: ``[B, K, H, W]`` raw class scores.
        labels: ``[B, H, W]`` long class ids in ``[0, K)`` or ``ignore_index``.
        ignore_index: label value skipped.
        class_weights: ``[K]`` per-class weights (PyTorch's ``weight``: the mean is
            weighted by the target class's weight), or None.

    Returns:
        Scalar; ``0`` (in the graph) when every pixel is ignored.
    """
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise LossInputError(
            f"cross_entropy_loss needs logits [B, K, H, W] and labels [B, H, W], got {list(logits.shape)} and {list(labels.shape)}"
        )
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
        if weight.shape != (logits.shape[1],):
            raise LossInputError(f"class_weights must have {logits.shape[1]} entries, got {list(weight.shape)}")
    labels = labels.long()
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore_index)


@torch.no_grad()
def _binary_iou(pred: Tensor, target: Tensor, w: Tensor, empty_iou: float) -> Tensor:
    inter = (w * pred * target).sum(dim=(2, 3))
    union = (w * torch.maximum(pred, target)).sum(dim=(2, 3))
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.full_like(union, empty_iou))


def iou_mse_loss(
    iou_pred: Tensor,
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    activation: Activation = "sigmoid",
    empty_iou: float = 1.0,
) -> Tensor:
    """MSE between predicted mask quality and the real IoU of the thresholded prediction (SAM, SAM-Path).

    The real IoU uses ``probability >= 0.5`` as the predicted mask and counts only pixels
    with non-zero ``mask``; it is a constant (no gradient flows through it). Only
    ``iou_pred`` receives gradients.

    Args:
        iou_pred: ``[B, N]`` predicted IoU per channel.
        logits: ``[B, N, H, W]`` raw scores.
        target: ``[B, N, H, W]`` in ``{0, 1}``.
        mask: pixel weights broadcastable to ``logits``; channels with no weight do not count.
        activation: how ``logits`` become probabilities (``"softmax"`` across channels as SAM-Path).
        empty_iou: IoU assigned when prediction and target are both empty.

    Returns:
        Scalar mean over the channels that count.
    """
    w = _weights(logits, target, mask)
    if iou_pred.shape != logits.shape[:2]:
        raise LossInputError(f"iou_pred must be [B, N] = {list(logits.shape[:2])}, got {list(iou_pred.shape)}")
    with torch.no_grad():
        pred = (_probabilities(logits, activation) >= 0.5).float()
        iou_true = _binary_iou(pred, target.float(), (w > 0).float(), empty_iou)
    counts = (w.sum(dim=(2, 3)) > 0).float()
    return _reduce_channels((iou_pred.float() - iou_true) ** 2, counts, "mean")


def semantic_to_onehot(labels: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """One-hot encode a semantic map, zeroing ignore pixels.

    Args:
        labels: ``[B, H, W]`` long class ids in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: ``K``.
        ignore_index: label value to skip.

    Returns:
        ``(onehot [B, K, H, W] float, valid [B, 1, H, W] bool)``; ignore pixels are all-zero
        in ``onehot`` and False in ``valid``.
    """
    if labels.dim() != 3:
        raise LossInputError(f"labels must be [B, H, W], got {list(labels.shape)}")
    labels = labels.long()
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise LossInputError(
            f"labels hold value {int(labels[bad][0])} outside [0, {num_classes}) and not ignore_index={ignore_index}"
        )
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float() * valid[:, None]
    return onehot, valid[:, None]


class SegmentationLoss(nn.Module):
    """Weighted sum of Dice, focal, BCE, cross-entropy and IoU-MSE; zero-weight terms are skipped.

    ``skip_channels`` are left out of every term: they get zero weight in the Dice, focal,
    BCE and IoU-MSE terms (so ``softmax`` still normalises over them, as SAM-Path does for
    its unlabelled channel 0), and pixels labelled with a skipped class are ignored by the
    cross-entropy term.

    Example: SAM-Path's eq. 3, ``(1 - α) L_dice + α L_focal + β L_mse`` with its best BCSS
    values ``α = 0.25, β = 0.0625`` and channel 0 (unlabelled) skipped::

        SegmentationLoss(dice=0.75, focal=0.25, bce=0.0, iou_mse=0.0625, skip_channels=(0,), activation="softmax")
    """

    def __init__(
        self,
        dice: float = 1.0,
        focal: float = 0.0,
        bce: float = 1.0,
        ce: float = 0.0,
        iou_mse: float = 0.0,
        dice_squared: bool = False,
        dice_smooth: float = 1.0,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        skip_channels: tuple[int, ...] = (),
        activation: Activation = "sigmoid",
        class_weights: list[float] | None = None,
    ) -> None:
        """Store the term weights and options.

        Args:
            dice: weight of :func:`dice_loss`.
            focal: weight of :func:`sigmoid_focal_loss`.
            bce: weight of :func:`bce_loss`.
            ce: weight of :func:`cross_entropy_loss` (needs ``labels`` in ``forward``).
            iou_mse: weight of :func:`iou_mse_loss` (needs ``iou_pred`` in ``forward``).
            dice_squared: MONAI-style squared Dice denominators.
            dice_smooth: Dice smoothing constant.
            focal_gamma: focal ``γ``.
            focal_alpha: focal ``α`` or None.
            skip_channels: channels excluded from all terms.
            activation: ``"sigmoid"`` or ``"softmax"`` for the Dice and IoU-MSE terms.
            class_weights: ``[K]`` weights for the cross-entropy term, or None.
        """
        super().__init__()
        for name, value in (("dice", dice), ("focal", focal), ("bce", bce), ("ce", ce), ("iou_mse", iou_mse)):
            if value < 0:
                raise LossInputError(f"SegmentationLoss weight {name}={value} must be >= 0")
        if activation not in ("sigmoid", "softmax"):
            raise LossInputError(f"SegmentationLoss activation must be 'sigmoid' or 'softmax', got {activation!r}")
        self.weights = {"dice": dice, "focal": focal, "bce": bce, "ce": ce, "iou_mse": iou_mse}
        self.dice_squared = dice_squared
        self.dice_smooth = dice_smooth
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.skip_channels = tuple(int(c) for c in skip_channels)
        self.activation: Activation = activation
        self.class_weights = class_weights

    def _channel_weights(self, logits: Tensor) -> Tensor:
        keep = torch.ones(logits.shape[1], dtype=torch.float32, device=logits.device)
        for c in self.skip_channels:
            if not -logits.shape[1] <= c < logits.shape[1]:
                raise LossInputError(f"skip_channels has {c} but logits have {logits.shape[1]} channels")
            keep[c] = 0.0
        return keep[None, :, None, None]

    def forward(
        self,
        logits: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
        iou_pred: Tensor | None = None,
        labels: Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> dict[str, Tensor]:
        """Compute every term with a non-zero weight.

        Args:
            logits: ``[B, N, H, W]`` raw scores (``N = K`` classes for semantic use).
            target: ``[B, N, H, W]`` in ``{0, 1}``; built from ``labels`` when None.
            mask: pixel weights broadcastable to ``logits`` (combined with the ignore mask
                derived from ``labels``).
            iou_pred: ``[B, N]`` predicted IoU, needed when ``iou_mse > 0``.
            labels: ``[B, H, W]`` semantic class ids; gives the one-hot target and ignore mask.
            ignore_index: label value skipped in ``labels``.

        Returns:
            ``{term: weight * value}`` for each active term, plus ``"loss"``: their sum.
        """
        if labels is not None:
            onehot, valid = semantic_to_onehot(labels, logits.shape[1], ignore_index)
            target = onehot if target is None else target
            mask = valid if mask is None else mask.to(torch.float32) * valid
        if target is None:
            raise LossInputError("SegmentationLoss needs target masks or semantic labels: pass target= or labels=")
        w = _weights(logits, target, mask) * self._channel_weights(logits)
        out: dict[str, Tensor] = {}
        if self.weights["dice"]:
            value = dice_loss(
                logits, target, w, smooth=self.dice_smooth, squared=self.dice_squared, activation=self.activation
            )
            out["dice"] = self.weights["dice"] * value
        if self.weights["focal"]:
            value = sigmoid_focal_loss(logits, target, w, gamma=self.focal_gamma, alpha=self.focal_alpha)
            out["focal"] = self.weights["focal"] * value
        if self.weights["bce"]:
            out["bce"] = self.weights["bce"] * bce_loss(logits, target, w)
        if self.weights["ce"]:
            if labels is None:
                raise LossInputError("SegmentationLoss ce > 0 needs semantic labels: pass labels= or set ce=0")
            ce_labels = labels.long()
            for c in self.skip_channels:
                ce_labels = torch.where(ce_labels == c % logits.shape[1], ignore_index, ce_labels)
            out["ce"] = self.weights["ce"] * cross_entropy_loss(logits, ce_labels, ignore_index, self.class_weights)
        if self.weights["iou_mse"]:
            if iou_pred is None:
                raise LossInputError("SegmentationLoss iou_mse > 0 needs iou_pred [B, N]: pass it or set iou_mse=0")
            out["iou_mse"] = self.weights["iou_mse"] * iou_mse_loss(
                iou_pred, logits, target, w, activation=self.activation
            )
        out["loss"] = sum(out.values(), logits.sum() * 0.0)
        return out
