"""pluggy hook specifications: what a pathseg plugin may provide.

A plugin is a module exposed under the entry-point group ``pathseg.plugins``; the entry
point's *name* is the model name it registers (a plugin registering several models
declares one entry point per name, all pointing at the same module). The module
implements any of the hooks below with :data:`hookimpl`. Implementations may accept
fewer arguments than a spec, so specs can grow without breaking plugins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pluggy

PROJECT = "pathseg"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: the short name users type (``pathseg fit --model <name>``).
        task: import path of the :class:`~pathseg_core.task.SegmentationTask` subclass,
            ``"package.module.ClassName"``.
        summary: one line for ``pathseg plugins list``.
        paper: citation of the method, if any.
        configs: names of example YAML configs the plugin ships (informational).
        tiny: task keyword arguments for a tiny random-initialised configuration that runs
            a few CPU steps in seconds; the conformance suite
            (:mod:`pathseg_core.testing.conformance`) trains, checkpoints and reloads every
            registered model with it.
    """

    name: str
    task: str
    summary: str = ""
    paper: str = ""
    configs: tuple[str, ...] = ()
    tiny: dict[str, Any] = field(default_factory=dict)


class PathsegHookSpecs:
    """Hooks, all prefixed ``pathseg_``."""

    @hookspec
    def pathseg_register_models(self) -> list[ModelSpec]:
        """Return the models this plugin provides."""
