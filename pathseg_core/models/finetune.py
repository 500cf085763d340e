"""Which parts of a SAM-style model train: the fine-tuning recipes the papers compare.

* ``none`` — nothing trains (zero-shot evaluation);
* ``decoder`` — SAM*: encoders frozen, the mask decoder trains;
* ``lora`` — LoRA on the image encoder's attention projections + the mask decoder;
* ``full`` — everything trains.

A part that no loss term reaches is frozen rather than left "trainable": with
``iou_weight = 0`` SAM's IoU head receives no gradient, and DDP (rightly) refuses
parameters that never get one.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from pathseg_core.models.adapters import apply_lora, freeze, unfreeze
from pathseg_core.models.backbones import SAM_LAYOUT, Layout
from pathseg_core.models.sam import SAM_VIT_LORA_TARGETS

Finetune = Literal["none", "decoder", "lora", "full"]


def configure_finetuning(
    model: nn.Module,
    finetune: Finetune,
    *,
    train_iou_head: bool = True,
    lora_rank: int = 4,
    lora_alpha: float = 8.0,
    lora_dropout: float = 0.0,
    lora_targets: tuple[str, ...] = SAM_VIT_LORA_TARGETS,
    layout: Layout = SAM_LAYOUT,
) -> nn.Module:
    """Set ``requires_grad`` on a SAM-family segmenter.

    Args:
        model: a SAM-style segmenter (e.g. :class:`~pathseg_core.models.sam.SamSegmenter`).
        finetune: the recipe (module docstring).
        train_iou_head: whether the IoU-prediction head trains (only if a loss supervises it).
        lora_rank: LoRA rank for ``lora``.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: LoRA dropout.
        lora_targets: module-name suffixes adapted by LoRA.
        layout: where encoder / decoder / never-used modules live
            (:mod:`pathseg_core.models.backbones`).

    Returns:
        ``model``, modified in place.
    """
    decoder = f"{layout.decoder}.*"
    if finetune == "none":
        return freeze(model)
    if finetune == "full":
        unfreeze(model)
    elif finetune == "decoder":
        freeze(model, except_patterns=[decoder])
    elif finetune == "lora":
        apply_lora(model.get_submodule(layout.encoder), list(lora_targets), r=lora_rank, alpha=lora_alpha,
                   dropout=lora_dropout)
        freeze(model, except_patterns=[decoder, "*lora_*"])
    else:
        raise ValueError(f"unknown finetune recipe '{finetune}'; use none, decoder, lora or full")
    never = tuple(f"{p}." for p in layout.unused)
    if not train_iou_head:
        never += (f"{layout.decoder}.iou_prediction_head.",)
    for name, p in model.named_parameters():
        if name.startswith(never):
            p.requires_grad_(False)
    return model
