"""One name → one SAM-family segmenter: SAM ViT, MobileSAM (TinyViT) and SAM2 (Hiera).

Plugins take a ``backbone`` name and call :func:`build_segmenter`; the returned
:class:`Backbone` also says where the encoder and mask decoder live, so
:func:`~pathseg_core.models.finetune.configure_finetuning` works for every family.

Names: ``vit_b``, ``vit_l``, ``vit_h``, ``tiny`` (SAM); ``mobile_sam``, ``mobile_sam_tiny``
(TinyViT); ``sam2_t``, ``sam2_s``, ``sam2_b+``, ``sam2_l``, ``sam2_tiny`` (SAM2.1).
``*tiny`` are random-initialised test sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pathseg_core.contracts import PromptableSegmenter

BackboneName = Literal[
    "vit_b", "vit_l", "vit_h", "tiny", "mobile_sam", "mobile_sam_tiny",
    "sam2_t", "sam2_s", "sam2_b+", "sam2_l", "sam2_tiny",
]


@dataclass(frozen=True)
class Layout:
    """Where the parts of a segmenter live (parameter-name prefixes).

    Attributes:
        encoder: attribute path of the image encoder (LoRA goes there).
        decoder: prefix of the mask decoder's parameters.
        unused: prefixes of modules single-image segmentation never runs (SAM2's video
            memory); they are always frozen so no optimiser or DDP sees them.
    """

    encoder: str = "image_encoder"
    decoder: str = "mask_decoder"
    unused: tuple[str, ...] = field(default_factory=tuple)


SAM_LAYOUT = Layout()
SAM2_LAYOUT = Layout(
    encoder="model.image_encoder",
    decoder="model.sam_mask_decoder",
    unused=(
        "model.memory_attention", "model.memory_encoder", "model.mask_downsample", "model.maskmem_tpos_enc",
        "model.no_obj_ptr", "model.obj_ptr_proj", "model.obj_ptr_tpos_proj", "model.no_mem_pos_enc",
        "model.no_obj_embed_spatial",
    ),
)


@dataclass
class Backbone:
    """A built segmenter and its :class:`Layout`."""

    model: PromptableSegmenter
    layout: Layout


def build_segmenter(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    multimask_output: bool = False,
    image_size: int | None = None,
) -> Backbone:
    """Build the segmenter ``name`` (module docstring), loading ``checkpoint`` by path if given."""
    from pathseg_core.models.sam import SAM_CONFIGS, SamSegmenter

    size = {} if image_size is None else {"image_size": image_size}
    if name in SAM_CONFIGS:
        model = SamSegmenter.from_config(name, checkpoint=checkpoint, multimask_output=multimask_output, **size)
        return Backbone(model, SAM_LAYOUT)
    if name in ("mobile_sam", "mobile_sam_tiny"):
        from pathseg_core.models.tinyvit import build_mobile_sam

        config = "vit_t" if name == "mobile_sam" else "tiny"
        sam = build_mobile_sam(checkpoint, config=config, **size)
        return Backbone(SamSegmenter.from_sam(sam, multimask_output=multimask_output, name=name), SAM_LAYOUT)
    if name.startswith("sam2_"):
        from pathseg_core.models.sam2 import Sam2Segmenter

        model = Sam2Segmenter.from_config(name[5:], checkpoint, multimask_output=multimask_output, **size)
        return Backbone(model, SAM2_LAYOUT)
    raise ValueError(f"unknown backbone '{name}'; choose one of {', '.join(BackboneName.__args__)}")
