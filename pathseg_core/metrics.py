"""Dice and IoU as torchmetrics, so Lightning syncs them across DDP ranks.

:func:`build_metrics` returns one :class:`torchmetrics.MetricCollection` with these keys
(``prefix`` prepended; class names from ``class_names``):

* ``dice_micro`` / ``iou_micro`` — pooled over pixels: ``2ΣTP / (2ΣTP + ΣFP + ΣFN)`` and
  ``ΣTP / (ΣTP + ΣFP + ΣFN)``, sums over all images and the counted classes. In a
  multiclass map every wrong pixel is one FP (for the predicted class) and one FN (for the
  true class), so with every class counted ``dice_micro`` equals pixel accuracy and
  ``iou_micro = acc / (2 - acc)``. With ``include_background=False`` class 0 is left out
  of the sums: its TP no longer count, but a foreground pixel predicted as background is
  still an FN of its class and background predicted as foreground an FP.
* ``dice_macro`` / ``iou_macro`` — per-class scores (each pooled over all images), then
  the unweighted mean over the counted classes that occur in the target or the
  prediction at all (a class with ``TP + FP + FN = 0`` is left out, torchmetrics'
  convention).
* ``dice_<class>`` / ``iou_<class>`` — the per-class scores (``ClasswiseWrapper``); a
  class never seen in target nor prediction scores 0.
* ``dice_per_image`` — the macro Dice of each sample on its own, averaged over samples;
  samples where no counted class occurs in target or prediction are left out.

Two tasks:

* ``"multiclass"``: ``preds`` ``[B, H, W]`` class ids (or ``[B, K, H, W]`` float scores, arg-maxed
  over ``K``), ``target`` ``[B, H, W]``; a sample is an image.
* ``"binary"``: per-prompt masks, ``preds`` ``[M, H, W]`` probabilities, logits or 0/1
  labels, ``target`` ``[M, H, W]`` in ``{0, 1}``; take the valid prompt slots of a
  ``[B, N, H, W]`` batch with :func:`select_valid`. It is scored as two classes,
  background (0) and foreground (1), so a sample is one prompted object; use
  ``include_background=False`` for the usual object Dice / IoU (then micro = the pooled
  foreground Dice, per-image = the mean Dice per object). Float ``preds`` outside
  ``[0, 1]`` are taken as logits (sigmoid), as torchmetrics does; then ``>= threshold``.

``ignore_index`` pixels in ``target`` count nowhere.

Which torchmetrics 1.9 classes fit (checked against its source): ``MulticlassF1Score``
supports both ``ignore_index`` and ``multidim_average="samplewise"``;
``MulticlassJaccardIndex``, ``BinaryJaccardIndex`` take ``ignore_index`` but have no
samplewise mode; ``BinaryF1Score`` has both but only scores the foreground;
``segmentation.DiceScore`` / ``MeanIoU`` have no ``ignore_index``. None can leave class 0
out of the micro sums, and the samplewise path one-hot encodes every pixel as int64
(``B·H·W·(K+1)·8`` bytes per input: GB-scale for a batch of 1024² tiles with 20 classes).
So :class:`ClassSubsetScore` is a small ``torchmetrics.Metric``: per-class (or per-sample,
per-class) TP / FP / FN states registered with ``add_state`` (summed or concatenated
across DDP ranks by torchmetrics), filled by one ``bincount`` per batch. With every class
counted it equals ``MulticlassF1Score`` / ``MulticlassJaccardIndex`` (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.wrappers import ClasswiseWrapper

from pathseg_core.contracts import IGNORE_INDEX

__all__ = ["ClassSubsetScore", "MetricsConfigError", "build_metrics", "select_valid"]


class MetricsConfigError(ValueError):
    """Arguments to :func:`build_metrics` that do not describe a valid metric set."""


def _binarize(preds: Tensor, threshold: float) -> Tensor:
    """``[M, H, W]`` 0/1 long labels from probabilities, logits or labels."""
    if preds.is_floating_point():
        if preds.numel() and (preds.min() < 0 or preds.max() > 1):
            preds = torch.sigmoid(preds)
        return (preds >= threshold).long()
    return (preds > 0).long()


class ClassSubsetScore(Metric):
    """Dice or IoU over a subset of classes, from DDP-synced per-class TP / FP / FN counts.

    Args:
        num_classes: ``K`` (2 for binary).
        score: ``"dice"`` (F1) or ``"iou"`` (Jaccard).
        average: ``"micro"``, ``"macro"`` or ``"none"`` (a ``[len(classes)]`` vector).
        classes: class ids to count (default: all ``K``).
        per_sample_mean: score each sample on its own, then average over the samples where
            a counted class occurs (for ``"none"``: per class, over samples where it occurs).
        binary: inputs are per-prompt probabilities / logits / labels thresholded at
            ``threshold`` (needs ``num_classes=2``).
        threshold: cut-off for ``binary`` inputs.
        ignore_index: target value skipped (None: every value must be a class).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        score: Literal["dice", "iou"] = "dice",
        average: Literal["micro", "macro", "none"] = "macro",
        classes: Sequence[int] | None = None,
        per_sample_mean: bool = False,
        binary: bool = False,
        threshold: float = 0.5,
        ignore_index: int | None = IGNORE_INDEX,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if score not in ("dice", "iou") or average not in ("micro", "macro", "none"):
            raise MetricsConfigError(f"score must be dice|iou and average micro|macro|none, got {score!r}, {average!r}")
        if binary and num_classes != 2:
            raise MetricsConfigError(f"binary inputs are scored as 2 classes, got num_classes={num_classes}")
        classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
        if not classes or any(not 0 <= c < num_classes for c in classes):
            raise MetricsConfigError(f"classes {classes} must be a non-empty subset of [0, {num_classes})")
        self.num_classes = num_classes
        self.score = score
        self.reduce = average
        self.classes = classes
        self.per_sample_mean = per_sample_mean
        self.binary = binary
        self.threshold = threshold
        self.ignore_index = ignore_index
        for name in ("tp", "fp", "fn"):
            if per_sample_mean:
                self.add_state(name, default=[], dist_reduce_fx="cat")
            else:
                self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def _labels(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``[S, P]`` long predicted and true classes (``S`` samples, ``P`` pixels)."""
        if self.binary:
            preds = _binarize(preds, self.threshold)
        elif preds.is_floating_point():
            if preds.dim() != target.dim() + 1 or preds.shape[1] != self.num_classes:
                raise MetricsConfigError(
                    f"float preds must be [B, K={self.num_classes}, H, W] scores, got {list(preds.shape)}"
                )
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape or preds.dim() < 2:
            raise MetricsConfigError(f"preds {list(preds.shape)} and target {list(target.shape)} must be [B, H, W]")
        preds, target = preds.long().flatten(1), target.long().flatten(1)
        k = self.num_classes
        counted = (
            target != self.ignore_index if self.ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
        )
        if (counted & ((target < 0) | (target >= k))).any():
            raise MetricsConfigError(
                f"target holds values outside [0, {k}) that are not ignore_index={self.ignore_index}"
            )
        if (counted & ((preds < 0) | (preds >= k))).any():
            raise MetricsConfigError(f"preds hold class ids outside [0, {k})")
        return preds, torch.where(counted, target, -1)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate TP / FP / FN; see the module docstring for the shapes of each task."""
        preds, target = self._labels(preds, target)
        k, s = self.num_classes, preds.shape[0]
        # One bin per (sample, true, predicted); ignored pixels go to one extra bin, dropped.
        sample = torch.arange(s, device=preds.device)[:, None] * (k * k)
        cell = torch.where(target >= 0, sample + target * k + preds, s * k * k)
        confusion = torch.bincount(cell.flatten(), minlength=s * k * k + 1)[:-1].view(s, k, k)
        tp = confusion.diagonal(dim1=1, dim2=2)
        fp = confusion.sum(dim=1) - tp
        fn = confusion.sum(dim=2) - tp
        if self.per_sample_mean:
            self.tp.append(tp)
            self.fp.append(fp)
            self.fn.append(fn)
        else:
            self.tp += tp.sum(0)
            self.fp += fp.sum(0)
            self.fn += fn.sum(0)

    def _formula(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        num = 2 * tp if self.score == "dice" else tp
        den = num + fp + fn
        return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(den))

    def compute(self) -> Tensor:
        """Reduce the stored counts over the chosen classes (and samples)."""
        states = (self.tp, self.fp, self.fn)
        if self.per_sample_mean:
            states = tuple(dim_zero_cat(x) if isinstance(x, list) and x else x for x in states)
            if isinstance(states[0], list):  # nothing seen yet
                states = tuple(torch.zeros(0, self.num_classes, device=self.device) for _ in states)
        tp, fp, fn = (x.float()[..., self.classes] for x in states)
        support = tp + fp + fn
        if self.reduce == "micro":
            value = self._formula(tp.sum(-1), fp.sum(-1), fn.sum(-1))
            present = support.sum(-1) > 0
        elif self.reduce == "macro":
            per_class = self._formula(tp, fp, fn)
            present = support > 0
            value = (per_class * present).sum(-1) / present.sum(-1).clamp(min=1)
            present = present.any(-1)
        else:
            value = self._formula(tp, fp, fn)
            present = support > 0
        if not self.per_sample_mean:
            return value
        return (value * present).sum(0) / present.sum(0).clamp(min=1)


class _PerClass(ClasswiseWrapper):
    """``ClasswiseWrapper`` that also works for one class (torchmetrics squeezes ``[1]`` to a scalar)."""

    def _convert_output(self, x: Tensor) -> dict[str, Any]:
        return super()._convert_output(x.reshape(-1))


def select_valid(preds: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Keep the real prompt slots: ``[B, N, H, W]`` (+ ``valid`` ``[B, N]``) to ``[M, H, W]``."""
    if preds.shape != target.shape or preds.dim() != 4:
        raise MetricsConfigError(
            f"preds and target must both be [B, N, H, W], got {list(preds.shape)} and {list(target.shape)}"
        )
    if valid is None:
        return preds.flatten(0, 1), target.flatten(0, 1)
    return preds[valid], target[valid]


def build_metrics(
    num_classes: int,
    *,
    task: Literal["binary", "multiclass"],
    ignore_index: int = IGNORE_INDEX,
    class_names: list[str] | None = None,
    include_background: bool = True,
    prefix: str = "",
    threshold: float = 0.5,
) -> MetricCollection:
    """Dice and IoU (micro, macro, per class) and per-image mean Dice; see the module docstring.

    Args:
        num_classes: ``K`` classes incl. background (class 0); 2 for ``task="binary"``.
        task: ``"multiclass"`` semantic maps or ``"binary"`` per-prompt masks.
        ignore_index: target value that counts nowhere.
        class_names: ``K`` names for the per-class keys (default ``class_<i>``, or
            ``background`` / ``foreground`` for binary).
        include_background: count class 0 in every metric; False drops it from all.
        prefix: prepended to every key (``.clone(prefix="val_")`` makes more).
        threshold: probability cut-off for binary ``preds``.

    Returns:
        A ``MetricCollection``; ``update(preds, target)`` then ``compute()``.
    """
    if task not in ("binary", "multiclass"):
        raise MetricsConfigError(f"task must be 'binary' or 'multiclass', got {task!r}")
    if task == "binary" and num_classes != 2:
        raise MetricsConfigError(
            f"task='binary' scores background + foreground: num_classes must be 2, got {num_classes}"
        )
    if num_classes < 2:
        raise MetricsConfigError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if class_names is None:
        class_names = ["background", "foreground"] if task == "binary" else [f"class_{i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise MetricsConfigError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
    classes = list(range(0 if include_background else 1, num_classes))
    names = [class_names[c] for c in classes]

    def make(score: Literal["dice", "iou"], average: Literal["micro", "macro", "none"], per_sample: bool = False):
        return ClassSubsetScore(
            num_classes,
            score=score,
            average=average,
            classes=classes,
            per_sample_mean=per_sample,
            binary=task == "binary",
            threshold=threshold,
            ignore_index=ignore_index,
        )

    metrics = {
        "dice_micro": make("dice", "micro"),
        "dice_macro": make("dice", "macro"),
        "iou_micro": make("iou", "micro"),
        "iou_macro": make("iou", "macro"),
        "dice_per_class": _PerClass(make("dice", "none"), labels=names, prefix="dice_"),
        "iou_per_class": _PerClass(make("iou", "none"), labels=names, prefix="iou_"),
        "dice_per_image": make("dice", "macro", per_sample=True),
    }
    # Compute groups would share one state among these metrics, but leave the metric inside
    # ClasswiseWrapper with a stale update count after reset(); seven bincounts instead.
    return MetricCollection(metrics, prefix=prefix or None, compute_groups=False)
