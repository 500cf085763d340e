"""Plugin registry: lazy loading, broken plugins, duplicate names, suggestions, CLI report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pathseg_core.plugins import PluginError, PluginRegistry, registry
from tests.plugin_fixtures import BROKEN_PLUGIN, GOOD_PLUGIN, make_distribution


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _registry() -> PluginRegistry:
    from importlib.metadata import entry_points

    return PluginRegistry(list(entry_points(group="pathseg.plugins")))


def test_resolving_one_name_imports_only_that_plugin(fake_site):
    make_distribution(fake_site, "distone", {"alpha": GOOD_PLUGIN, "beta": GOOD_PLUGIN})
    reg = _registry()
    assert {"alpha", "beta"} <= set(reg.names())
    assert "distone_alpha" not in sys.modules and "distone_beta" not in sys.modules
    assert reg.resolve_task_path("alpha") == "distone_alpha.Task"
    assert "distone_alpha" in sys.modules
    assert "distone_beta" not in sys.modules


def test_full_class_path_passes_through(fake_site):
    reg = _registry()
    assert reg.resolve_task_path("pathseg_sam.task.SamTask") == "pathseg_sam.task.SamTask"


def test_broken_plugin_is_reported_and_breaks_only_its_name(fake_site):
    make_distribution(fake_site, "distbroken", {"broken": BROKEN_PLUGIN})
    make_distribution(fake_site, "distgood", {"gamma": GOOD_PLUGIN})
    reg = _registry()
    assert reg.resolve_task_path("gamma") == "distgood_gamma.Task"
    with pytest.raises(
        PluginError, match=r"plugin 'broken' \(distbroken.*failed to import: ImportError: .*notinstalled"
    ):
        reg.spec("broken")
    records = {r.name: r for r in _registry().records()}
    assert records["broken"].error is not None and "notinstalled" in records["broken"].error
    assert "Traceback" in records["broken"].error_detail
    assert records["gamma"].error is None


def test_two_distributions_claiming_one_name_is_an_error_naming_both(fake_site):
    make_distribution(fake_site, "distx", {"clash": GOOD_PLUGIN})
    make_distribution(fake_site, "disty", {"clash": GOOD_PLUGIN})
    with pytest.raises(PluginError, match=r"claimed by two distributions: distx and disty"):
        _registry().spec("clash")


def test_unknown_name_suggests_closest(fake_site):
    with pytest.raises(PluginError, match=r"unknown model 'sma'.*did you mean 'sam'"):
        _registry().spec("sma")


def test_block_and_disable_switches(fake_site, monkeypatch):
    make_distribution(fake_site, "distblock", {"blocked": GOOD_PLUGIN})
    monkeypatch.setenv("PATHSEG_BLOCK_PLUGINS", "blocked")
    assert "blocked" not in PluginRegistry().names()
    monkeypatch.setenv("PATHSEG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert PluginRegistry().names() == []


def test_builtin_sam_plugin_registered():
    spec = registry().spec("sam")
    assert spec.task == "pathseg_sam.task.SamTask"
    from pathseg_sam.task import SamTask

    assert registry().resolve_task_class("sam") is SamTask


def _pathseg(*args, env_extra=None, cwd=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "pathseg_core", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_cli_plugins_list_and_doctor_report_broken_plugin(tmp_path):
    make_distribution(tmp_path, "distcli", {"kaputt": BROKEN_PLUGIN})
    env = {"PYTHONPATH": str(tmp_path)}
    out = _pathseg("plugins", "list", env_extra=env)
    assert out.returncode == 1
    assert "sam" in out.stdout and "kaputt" in out.stdout and "notinstalled" in out.stdout
    doc = _pathseg("plugins", "doctor", env_extra=env)
    assert "Traceback" in doc.stdout and "distcli" in doc.stdout


def test_cli_naming_broken_plugin_fails_with_one_line(tmp_path):
    make_distribution(tmp_path, "distcli2", {"kaputt2": BROKEN_PLUGIN})
    out = _pathseg("fit", "--model", "kaputt2", env_extra={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "kaputt2" in lines[0] and "failed to import" in lines[0]


def test_cli_unknown_model_one_line():
    out = _pathseg("fit", "--model", "wsisma")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown model 'wsisma'" in out.stderr
