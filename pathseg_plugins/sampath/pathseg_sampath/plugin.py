"""Entry point of the ``sampath`` plugin: registers the model name with pathseg."""

from __future__ import annotations

from pathseg_core.hookspecs import ModelSpec, hookimpl


@hookimpl
def pathseg_register_models() -> list[ModelSpec]:
    """The ``sampath`` model."""
    return [
        ModelSpec(
            name="sampath",
            task="pathseg_sampath.task.SamPathTask",
            summary="SAM-Path: frozen SAM + HIPT ViT-S encoders, new neck, k class-prompt tokens (semantic)",
            paper="Zhang et al., SAM-Path: A Segment Anything Model for Semantic Segmentation in Digital "
            "Pathology, MedAGI @ MICCAI 2023 (arXiv 2307.09570)",
            configs=("sampath_bcss_tiny.yaml", "sampath_ocdc_tiny.yaml"),
            tiny={"sam_backbone": "tiny", "hipt_backbone": "tiny", "num_classes": 3},
        )
    ]
