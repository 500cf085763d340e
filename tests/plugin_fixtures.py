"""Fake installed distributions for plugin-registry tests (a ``*.dist-info`` on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

GOOD_PLUGIN = """
from pathseg_core.hookspecs import ModelSpec, hookimpl

@hookimpl
def pathseg_register_models():
    return [ModelSpec(name="{name}", task="{module}.Task", summary="fake")]

class Task:
    pass
"""

BROKEN_PLUGIN = """
raise ImportError("this plugin needs the package 'notinstalled'")
"""


def make_distribution(root: Path, dist: str, plugins: dict[str, str]) -> None:
    """Write a fake distribution ``dist`` whose entry points map model name -> plugin source.

    Each plugin becomes a top-level module ``<dist>_<name>`` with the given source (the
    placeholders ``{name}`` and ``{module}`` are filled in).
    """
    info = root / f"{dist}-0.0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    lines = ["[pathseg.plugins]"]
    for name, source in plugins.items():
        module = f"{dist.replace('-', '_')}_{name}"
        (root / f"{module}.py").write_text(source.format(name=name, module=module))
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
