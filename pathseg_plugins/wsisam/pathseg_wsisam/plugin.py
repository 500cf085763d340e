"""Entry point of the ``wsisam`` plugin: registers the model name with pathseg."""

from __future__ import annotations

from pathseg_core.hookspecs import ModelSpec, hookimpl


@hookimpl
def pathseg_register_models() -> list[ModelSpec]:
    """WSI-SAM."""
    return [
        ModelSpec(
            name="wsisam",
            task="pathseg_wsisam.task.WSISamTask",
            summary="WSI-SAM: frozen SAM, HR + concentric LR tokens, dual mask decoder, token aggregation",
            paper="Liu et al., WSI-SAM: Multi-resolution Segment Anything Model (SAM) for histopathology WSIs, 2024",
            configs=(
                "wsisam_bcss_tiny.yaml",
                "wsisam_tinyvit.yaml",
                "wsisam_vit_b.yaml",
                "wsisam_vit_l.yaml",
                "wsisam_vit_h.yaml",
            ),
            tiny={"backbone": "tiny", "max_objects": 2},
        )
    ]
