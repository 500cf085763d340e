"""Entry point of the ``sam`` plugin: registers the model name with pathseg."""

from __future__ import annotations

from pathseg_core.hookspecs import ModelSpec, hookimpl


@hookimpl
def pathseg_register_models() -> list[ModelSpec]:
    """The ``sam`` baseline."""
    return [
        ModelSpec(
            name="sam",
            task="pathseg_sam.task.SamTask",
            summary="SAM baseline: zero-shot (finetune=none), SAM* (decoder), LoRA or full fine-tuning",
            paper="Kirillov et al., Segment Anything, ICCV 2023",
            configs=("sam_ocdc_tiny.yaml",),
            tiny={"backbone": "tiny", "finetune": "full"},
        )
    ]
