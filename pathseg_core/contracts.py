"""The contracts every pathseg model, datamodule and plugin speaks.

* :class:`SegBatch` — what a datamodule yields: images, optional concentric context
  images, prompts, targets and per-sample metadata. Typed, not a loose dict.
* :class:`PromptableSegmenter` — ``encode(images) -> Features`` then
  ``decode(features, prompts) -> Prediction``. The split lets a frozen encoder run once
  per image, serve many prompts, and be cached to disk.

Conventions (segment-anything's): images are float RGB in ``[0, 255]`` of shape
``[B, 3, H, W]``; normalisation belongs to the model's ``preprocess``. Boxes are
``xyxy`` in pixels of the image they prompt, points are ``xy`` (column, row) pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

#: Label value that losses and metrics skip (outside ROI, "exclude", padding).
IGNORE_INDEX = 255

#: Values of :attr:`Prompts.kind`.
PROMPT_BOX, PROMPT_POINTS, PROMPT_MASK = 0, 1, 2

#: Encoder output: ``"embedding"`` ``[B, C, h, w]`` is always present; models add the
#: intermediate features their decoder needs (e.g. ``"early"``, ``"late"``).
Features = dict[str, Tensor]


class PromptError(ValueError):
    """Prompts whose shapes or values do not fit the batch they prompt."""


def _to(value: object, device: torch.device | str) -> object:
    if isinstance(value, Tensor):
        return value.to(device)
    if hasattr(value, "to") and hasattr(value, "__dataclass_fields__"):
        return value.to(device)
    return value


class _Movable:
    """Mixin: ``.to(device)`` on a dataclass moves every tensor field."""

    def to(self, device: torch.device | str):  # noqa: ANN201 - returns Self
        """Return a copy with every tensor field on ``device``."""
        return replace(self, **{f.name: _to(getattr(self, f.name), device) for f in fields(self)})


@dataclass
class Prompts(_Movable):
    """Prompts for ``N`` objects per image; any field may be ``None``.

    Attributes:
        boxes: ``[B, N, 4]`` float, ``xyxy`` pixels in the prompted image.
        points: ``[B, N, P, 2]`` float, ``xy`` pixels.
        point_labels: ``[B, N, P]`` long: 1 positive, 0 negative, -1 padding.
        masks: ``[B, N, 1, h, w]`` float coarse-mask logits (SAM: ``h = w = 256``).
        valid: ``[B, N]`` bool, which of the ``N`` slots hold a real object (images in a
            batch can have different object counts; padded slots are ignored by losses and
            metrics).
        kind: ``[B, N]`` long, which prompt each slot carries when types are mixed
            (:data:`PROMPT_BOX`, :data:`PROMPT_POINTS`, :data:`PROMPT_MASK`), or ``None``
            when every given prompt applies to every slot.
    """

    boxes: Tensor | None = None
    points: Tensor | None = None
    point_labels: Tensor | None = None
    masks: Tensor | None = None
    valid: Tensor | None = None
    kind: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(B, N)`` taken from whichever prompt is present."""
        for t in (self.boxes, self.points, self.masks, self.valid):
            if t is not None:
                return int(t.shape[0]), int(t.shape[1])
        raise PromptError("prompts are empty: give boxes, points or masks")

    def validate(self, batch_size: int, image_size: tuple[int, int] | None = None) -> None:
        """Raise :class:`PromptError` (one line) if shapes disagree with each other or the batch."""
        b, n = self.shape
        if b != batch_size:
            raise PromptError(f"prompts cover {b} images but the batch has {batch_size}")
        if self.boxes is not None and tuple(self.boxes.shape) != (b, n, 4):
            raise PromptError(f"boxes must be [B, N, 4] xyxy, got {list(self.boxes.shape)}")
        if self.points is not None:
            if self.points.dim() != 4 or self.points.shape[:2] != (b, n) or self.points.shape[-1] != 2:
                raise PromptError(f"points must be [B, N, P, 2] xy, got {list(self.points.shape)}")
            if self.point_labels is None or self.point_labels.shape != self.points.shape[:3]:
                got = None if self.point_labels is None else list(self.point_labels.shape)
                raise PromptError(f"point_labels must be [B, N, P] to match points, got {got}")
        if self.masks is not None and (self.masks.dim() != 5 or self.masks.shape[:3] != (b, n, 1)):
            raise PromptError(f"mask prompts must be [B, N, 1, h, w], got {list(self.masks.shape)}")
        if self.valid is not None and tuple(self.valid.shape) != (b, n):
            raise PromptError(f"valid must be [B, N], got {list(self.valid.shape)}")
        if self.kind is not None and tuple(self.kind.shape) != (b, n):
            raise PromptError(f"kind must be [B, N], got {list(self.kind.shape)}")
        if image_size is not None and self.boxes is not None and self.boxes.numel():
            h, w = image_size
            bx = self.boxes if self.valid is None else self.boxes[self.valid]
            if bx.numel() and (bx[..., 0::2].min() < -0.5 or bx[..., 0::2].max() > w + 0.5
                               or bx[..., 1::2].min() < -0.5 or bx[..., 1::2].max() > h + 0.5):
                raise PromptError(f"boxes fall outside the {w}x{h} image they prompt")

    def valid_mask(self) -> Tensor:
        """``[B, N]`` bool: the given ``valid`` or all true."""
        b, n = self.shape
        if self.valid is not None:
            return self.valid
        device = next(t.device for t in (self.boxes, self.points, self.masks) if t is not None)
        return torch.ones(b, n, dtype=torch.bool, device=device)


@dataclass
class Targets(_Movable):
    """Ground truth: per-prompt masks, a semantic map, or both.

    Attributes:
        masks: ``[B, N, H, W]`` float in ``{0, 1}``, one mask per prompt slot.
        semantic: ``[B, H, W]`` long class ids; ``ignore_index`` pixels are skipped.
        class_ids: ``[B, N]`` long, the class of each prompted object (per-class scores).
        ignore_index: label value skipped by losses and metrics.
    """

    masks: Tensor | None = None
    semantic: Tensor | None = None
    class_ids: Tensor | None = None
    ignore_index: int = IGNORE_INDEX


@dataclass
class SampleMeta:
    """Where each image of a batch came from (lists of length ``B``).

    ``x`` / ``y`` are the top-left corner in level-0 pixels of the source slide (0 for
    plain tiles); ``mpp`` is microns per pixel of the image as given to the model.
    """

    source_id: list[str] = field(default_factory=list)
    level: list[int] = field(default_factory=list)
    mpp: list[float | None] = field(default_factory=list)
    x: list[int] = field(default_factory=list)
    y: list[int] = field(default_factory=list)

    def to(self, device: torch.device | str) -> SampleMeta:  # noqa: ARG002 - nothing to move
        """Metadata stays on the host."""
        return self


@dataclass
class SegBatch(_Movable):
    """One batch, as every datamodule yields it.

    Attributes:
        images: ``[B, 3, H, W]`` float RGB in ``[0, 255]``.
        context: ``[B, 3, H, W]`` concentric low-resolution images (same centre, wider
            field of view) or ``None``.
        prompts: prompts for ``images`` or ``None`` (derived on the fly by the task).
        context_prompts: the same prompts mapped into ``context`` or ``None``.
        targets: ground truth, or ``None`` at prediction time.
        meta: provenance of each image.
    """

    images: Tensor
    context: Tensor | None = None
    prompts: Prompts | None = None
    context_prompts: Prompts | None = None
    targets: Targets | None = None
    context_targets: Targets | None = None
    meta: SampleMeta = field(default_factory=SampleMeta)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of ``images``."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])


class Prediction(NamedTuple):
    """Decoder output: one mask per prompt slot (or per class token for semantic models).

    Attributes:
        mask_logits: ``[B, N, h, w]`` logits at the decoder's resolution, covering
            exactly the input image's extent (any padding removed); the task resizes them
            to the target size.
        iou_pred: ``[B, N]`` predicted mask quality (IoU), or ``None``.
        extras: model-specific tensors (e.g. the low-resolution branch's logits).
    """

    mask_logits: Tensor
    iou_pred: Tensor | None = None
    extras: dict[str, Tensor] | None = None


class PromptableSegmenter(nn.Module):
    """Base class: ``forward(images, prompts) = decode(encode(images), prompts)``.

    Subclasses implement :meth:`encode` and :meth:`decode`. ``semantic = True`` marks a
    model that needs no prompts and predicts one channel per class (``N = num_classes``).
    ``forward`` stays trainable (no ``no_grad``): freezing is a training choice.
    """

    #: True for models that predict a fixed set of classes without prompts.
    semantic: bool = False
    #: Number of output channels for semantic models (class count incl. background).
    num_classes: int | None = None
    #: Input side length the encoder expects (images are resized to it by ``preprocess``).
    image_size: int = 1024
    #: Whether the model consumes ``SegBatch.context`` (concentric low-resolution patch).
    needs_context: bool = False

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:
        """Run the image encoder on ``[B, 3, H, W]`` images in ``[0, 255]``."""
        raise NotImplementedError

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:
        """Turn features and prompts into mask logits and quality predictions."""
        raise NotImplementedError

    def forward(self, images: Tensor, prompts: Prompts | None = None, context: Tensor | None = None) -> Prediction:
        """Encode then decode."""
        return self.decode(self.encode(images, context), prompts)

    def encoder_is_trainable(self) -> bool:
        """Whether any encoder parameter trains; if not, the task encodes under ``no_grad``.

        The default looks at an ``image_encoder`` attribute (segment-anything naming);
        models with other encoder layouts override it.
        """
        encoder = getattr(self, "image_encoder", None)
        if encoder is None:
            return True
        return any(p.requires_grad for p in encoder.parameters())

    def encoder_signature(self) -> str:
        """A string that changes whenever encoder outputs would (for embedding caches)."""
        return type(self).__name__
