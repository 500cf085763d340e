"""Registers ``sam_adapter`` with pathseg through the ``pathseg.plugins`` entry point."""

from __future__ import annotations

from pathseg_core.hookspecs import ModelSpec, hookimpl


@hookimpl
def pathseg_register_models() -> list[ModelSpec]:
    """The one model of this plugin."""
    return [
        ModelSpec(
            name="sam_adapter",
            task="pathseg_bottleneck_adapter.task.AdapterSamTask",
            summary="SAM with residual bottleneck adapters beside each frozen ViT block's MLP",
            paper="Houlsby et al., Parameter-Efficient Transfer Learning for NLP, ICML 2019",
            tiny={"backbone": "tiny", "bottleneck": 8},
        )
    ]
