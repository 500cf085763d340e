"""Turn a list of dataset samples (dicts) into one typed :class:`~pathseg_core.contracts.SegBatch`.

A sample is a dict with

* ``"image"``: ``[3, H, W]`` uint8 or float RGB in ``[0, 255]``;
* ``"labels"`` (optional): ``[H, W]`` long class ids, ``"ignore_index"`` marking skipped pixels;
* ``"source_id"`` (str), ``"x"``, ``"y"`` (int, top-left of the patch in level-0 pixels of
  its source), optionally ``"level"`` (int, default 0) and ``"mpp"`` (float or ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from pathseg_core.contracts import IGNORE_INDEX, SampleMeta, SegBatch, Targets


class CollateError(ValueError):
    """Samples of one batch cannot be stacked (different sizes, mixed labels)."""


def collate_segbatch(samples: Sequence[Mapping[str, object]]) -> SegBatch:
    """Stack samples into a :class:`SegBatch`.

    Returns:
        ``images`` ``[B, 3, H, W]`` float32 in ``[0, 255]``; ``targets.semantic`` ``[B, H, W]``
        long (``None`` when samples carry no labels); ``meta`` lists of length ``B``. Prompts
        are left ``None`` (the task derives them).

    Raises:
        CollateError: empty batch, images of different sizes, some samples with labels
            and some without, or different ``ignore_index`` values.
    """
    if not samples:
        raise CollateError("cannot collate an empty batch")
    sizes = {tuple(s["image"].shape) for s in samples}  # type: ignore[union-attr]
    if len(sizes) != 1:
        raise CollateError(f"images of one batch differ in shape {sorted(sizes)}; set patch_size or image_size")
    images = torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()
    has_labels = {"labels" in s for s in samples}
    if len(has_labels) != 1:
        raise CollateError("some samples carry labels and some do not; a batch must be all one or the other")
    targets = None
    if has_labels == {True}:
        ignore = {int(s.get("ignore_index", IGNORE_INDEX)) for s in samples}  # type: ignore[call-overload]
        if len(ignore) != 1:
            raise CollateError(f"samples of one batch use different ignore_index values {sorted(ignore)}")
        semantic = torch.stack([torch.as_tensor(s["labels"]) for s in samples]).long()
        targets = Targets(semantic=semantic, ignore_index=ignore.pop())
    meta = SampleMeta(
        source_id=[str(s["source_id"]) for s in samples],
        level=[int(s.get("level", 0)) for s in samples],  # type: ignore[call-overload]
        mpp=[s.get("mpp") for s in samples],  # type: ignore[misc]
        x=[int(s["x"]) for s in samples],  # type: ignore[call-overload]
        y=[int(s["y"]) for s in samples],  # type: ignore[call-overload]
    )
    return SegBatch(images=images, targets=targets, meta=meta)
