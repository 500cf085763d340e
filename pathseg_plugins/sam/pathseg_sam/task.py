"""``SamTask``: SAM with box / point / mask prompts, zero-shot or fine-tuned.

The baseline rows of the pathology SAM papers:

* ``finetune="none"`` — vanilla SAM, zero-shot (evaluate with ``pathseg test``);
* ``finetune="decoder"`` — SAM*: image and prompt encoders frozen, mask decoder trained
  (WSI-SAM Table 1 "SAM*");
* ``finetune="lora"`` — LoRA adapters on the image encoder's attention (``qkv``, ``proj``)
  plus the mask decoder;
* ``finetune="full"`` — everything trains.
"""

from __future__ import annotations

from typing import Literal

from pathseg_core.contracts import PromptableSegmenter
from pathseg_core.models.finetune import Finetune, configure_finetuning
from pathseg_core.models.sam import SamSegmenter
from pathseg_core.task import SegmentationTask


class SamTask(SegmentationTask):
    """SAM baseline.

    Args:
        backbone: SAM configuration (``tiny`` is a random-initialised test size).
        checkpoint: path of an official SAM checkpoint (e.g. ``sam_vit_b_01ec64.pth``);
            without one the model is random-initialised.
        encoder_input_size: encoder input side (default: the configuration's).
        finetune: which parts train (see the module docstring).
        multimask_output: predict SAM's 3 masks and keep the best-scored one.
        lora_rank: LoRA rank for ``finetune="lora"``.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: LoRA dropout.
        **kwargs: the shared task options (:class:`~pathseg_core.task.SegmentationTask`).
    """

    def __init__(
        self,
        backbone: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "vit_b",
        checkpoint: str | None = None,
        encoder_input_size: int | None = None,
        finetune: Finetune = "decoder",
        multimask_output: bool = False,
        lora_rank: int = 4,
        lora_alpha: float = 8.0,
        lora_dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)

    def configure_models(self) -> PromptableSegmenter:
        """Build SAM and set what trains (the IoU head only when ``iou_weight > 0``)."""
        hp = self.hparams
        overrides = {} if hp.encoder_input_size is None else {"image_size": hp.encoder_input_size}
        model = SamSegmenter.from_config(
            hp.backbone, checkpoint=hp.checkpoint, multimask_output=hp.multimask_output, **overrides
        )
        return configure_finetuning(
            model, hp.finetune, train_iou_head=hp.iou_weight > 0,
            lora_rank=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
        )
