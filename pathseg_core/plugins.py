"""Lazy plugin registry over the ``pathseg.plugins`` entry-point group.

Reading entry-point metadata costs nothing; importing a plugin can cost seconds. So a
name is resolved by looking only at the entry points *named* like it, importing just that
plugin and asking its ``pathseg_register_models`` hook. ``pathseg plugins list`` imports
them all and reports each failure next to its plugin instead of crashing.

Environment switches (pytest-style):
    ``PATHSEG_DISABLE_PLUGIN_AUTOLOAD=1``  no entry points are read at all.
    ``PATHSEG_BLOCK_PLUGINS=a,b``           these entry-point names are ignored.
"""

from __future__ import annotations

import difflib
import importlib
import os
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

import pluggy

from pathseg_core.hookspecs import PROJECT, ModelSpec, PathsegHookSpecs

GROUP = "pathseg.plugins"


class PluginError(RuntimeError):
    """A plugin cannot be found, imported, or is ambiguous."""


@dataclass
class PluginRecord:
    """What is known about one entry point: where it comes from and how loading went."""

    name: str
    value: str
    distribution: str
    version: str
    models: list[ModelSpec] = field(default_factory=list)
    error: str | None = None
    error_detail: str | None = None


def _blocked() -> set[str]:
    return {n.strip() for n in os.environ.get("PATHSEG_BLOCK_PLUGINS", "").split(",") if n.strip()}


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


class PluginRegistry:
    """Entry points grouped by name, loaded on demand into one pluggy manager."""

    def __init__(self, eps: list[EntryPoint] | None = None) -> None:
        if eps is None:
            eps = [] if os.environ.get("PATHSEG_DISABLE_PLUGIN_AUTOLOAD") else list(entry_points(group=GROUP))
        blocked = _blocked()
        self._by_name: dict[str, list[EntryPoint]] = defaultdict(list)
        for ep in eps:
            if ep.name not in blocked:
                self._by_name[ep.name].append(ep)
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(PathsegHookSpecs)
        self._loaded: dict[str, ModuleType] = {}
        self._models: dict[str, tuple[ModelSpec, str]] = {}
        self._specs_of: dict[str, list[ModelSpec]] = {}

    # -- discovery ---------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every registered model name (entry-point names), sorted; imports nothing."""
        return sorted(self._by_name)

    def register_module(self, module: ModuleType, distribution: str = "<in-process>") -> list[ModelSpec]:
        """Register an already-imported plugin module (tests, built-ins, notebooks)."""
        if module.__name__ in self._specs_of:
            return self._specs_of[module.__name__]
        self.pm.register(module, name=module.__name__)
        specs: list[ModelSpec] = []
        caller = self.pm.subset_hook_caller("pathseg_register_models", remove_plugins=[
            p for p in self.pm.get_plugins() if p is not module
        ])
        for result in caller():
            specs.extend(result or [])
        for spec in specs:
            if spec.name in self._models and self._models[spec.name][1] != distribution:
                other = self._models[spec.name][1]
                raise PluginError(
                    f"model name '{spec.name}' is claimed by two distributions: {other} and {distribution}; "
                    f"uninstall one or block it with PATHSEG_BLOCK_PLUGINS={spec.name}"
                )
            self._models[spec.name] = (spec, distribution)
        self._specs_of[module.__name__] = specs
        return specs

    def _load_entry_point(self, ep: EntryPoint) -> list[ModelSpec]:
        dist, _ = _dist_of(ep)
        if ep.value in self._loaded:
            module = self._loaded[ep.value]
        else:
            module = ep.load()
            self._loaded[ep.value] = module
        return self.register_module(module, distribution=dist)

    def _check_unique(self, name: str) -> EntryPoint:
        eps = self._by_name[name]
        dists = sorted({_dist_of(ep)[0] for ep in eps})
        if len(dists) > 1:
            raise PluginError(
                f"model name '{name}' is claimed by two distributions: {' and '.join(dists)}; "
                f"uninstall one or block it with PATHSEG_BLOCK_PLUGINS={name}"
            )
        return eps[0]

    def spec(self, name: str) -> ModelSpec:
        """The :class:`ModelSpec` for ``name``, importing only the plugin that declares it."""
        if name in self._models:
            return self._models[name][0]
        if name not in self._by_name:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(self.names()) or "none installed"
            raise PluginError(f"unknown model '{name}' (registered: {known}){hint}")
        ep = self._check_unique(name)
        try:
            self._load_entry_point(ep)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - any import failure of third-party code
            dist, _ = _dist_of(ep)
            raise PluginError(
                f"plugin '{name}' ({dist}, {ep.value}) failed to import: {type(exc).__name__}: {exc}; "
                f"run `pathseg plugins doctor` for the traceback"
            ) from exc
        if name not in self._models:
            raise PluginError(f"plugin '{name}' ({ep.value}) loaded but registered no model named '{name}'")
        return self._models[name][0]

    def resolve_task_path(self, name_or_path: str) -> str:
        """Map a short model name to its task class path; a dotted class path passes through."""
        if "." in name_or_path and name_or_path not in self._by_name:
            return name_or_path
        return self.spec(name_or_path).task

    def resolve_task_class(self, name_or_path: str) -> type:
        """Import and return the task class for a short name or a full class path."""
        path = self.resolve_task_path(name_or_path)
        module_name, _, cls_name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot import model class '{path}': {exc}") from exc

    # -- reporting -----------------------------------------------------------------------
    def records(self) -> list[PluginRecord]:
        """Load every entry point and report each one, failures included (never raises)."""
        out: list[PluginRecord] = []
        for name in self.names():
            for ep in self._by_name[name]:
                dist, version = _dist_of(ep)
                rec = PluginRecord(name=name, value=ep.value, distribution=dist, version=version)
                try:
                    if len({_dist_of(e)[0] for e in self._by_name[name]}) > 1:
                        self._check_unique(name)
                    specs = self._load_entry_point(ep)
                    rec.models = [s for s in specs if s.name == name] or specs
                except Exception as exc:  # noqa: BLE001 - report, don't crash
                    rec.error = f"{type(exc).__name__}: {exc}"
                    rec.error_detail = traceback.format_exc()
                out.append(rec)
        return out


_REGISTRY: PluginRegistry | None = None


def registry() -> PluginRegistry:
    """The process-wide registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = PluginRegistry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (tests install plugins at run time)."""
    global _REGISTRY
    _REGISTRY = None
    importlib.invalidate_caches()


def resolve_task_class(name_or_path: str) -> type:
    """Task class for a registered short name (``"sam"``) or a full class path."""
    return registry().resolve_task_class(name_or_path)
