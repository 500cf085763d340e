"""``AdapterSamTask``: frozen SAM encoder + trainable bottleneck adapters and mask decoder."""

from __future__ import annotations

from typing import Literal

from pathseg_bottleneck_adapter.adapter import attach_adapters
from pathseg_core.contracts import PromptableSegmenter
from pathseg_core.models.finetune import configure_finetuning
from pathseg_core.models.sam import SamSegmenter
from pathseg_core.task import SegmentationTask


class AdapterSamTask(SegmentationTask):
    """SAM with bottleneck adapters.

    Args:
        backbone: SAM configuration name.
        checkpoint: official SAM checkpoint path (random init without one).
        encoder_input_size: encoder input side (default: the configuration's).
        bottleneck: hidden width of each adapter.
        **kwargs: shared task options.
    """

    def __init__(
        self,
        backbone: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "vit_b",
        checkpoint: str | None = None,
        encoder_input_size: int | None = None,
        bottleneck: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)

    def configure_models(self) -> PromptableSegmenter:
        """Build SAM, freeze it, add adapters; adapters and the mask decoder train."""
        hp = self.hparams
        overrides = {} if hp.encoder_input_size is None else {"image_size": hp.encoder_input_size}
        model = SamSegmenter.from_config(hp.backbone, checkpoint=hp.checkpoint, **overrides)
        configure_finetuning(model, "decoder", train_iou_head=hp.iou_weight > 0)
        blocks = model.image_encoder.blocks
        dim = blocks[0].mlp.lin1.in_features
        # Registered inside the encoder so the task sees a trainable encoder and encodes with grad.
        model.image_encoder.adapters = attach_adapters(blocks, dim, hp.bottleneck)
        return model
