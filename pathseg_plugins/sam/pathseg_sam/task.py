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

from pathseg_core.contracts import PromptableSegmenter
from pathseg_core.models.backbones import BackboneName, build_segmenter
from pathseg_core.models.finetune import Finetune, configure_finetuning
from pathseg_core.task import SegmentationTask


class SamTask(SegmentationTask):
    """SAM baseline.

    Args:
        backbone: SAM ViT (``vit_b/l/h``), MobileSAM (``mobile_sam``) or SAM2.1 (``sam2_t/s/b+/l``);
            names ending in ``tiny`` are random-initialised test sizes.
        checkpoint: path of the official checkpoint (``sam_vit_b_01ec64.pth``, ``mobile_sam.pt``,
            ``sam2.1_hiera_tiny.pt`` …); without one the model is random-initialised.
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
        backbone: BackboneName = "vit_b",
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
        built = build_segmenter(hp.backbone, hp.checkpoint, multimask_output=hp.multimask_output,
                                image_size=hp.encoder_input_size)
        return configure_finetuning(
            built.model, hp.finetune, train_iou_head=hp.iou_weight > 0, layout=built.layout,
            lora_rank=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
        )
