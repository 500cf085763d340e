"""The example third-party plugin installs with pip and trains from the CLI on real OCDC tiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import REPO, quick_args, run_pathseg

PLUGIN = REPO / "examples" / "third_party_plugin"


@pytest.fixture(scope="module")
def installed() -> None:
    """``pip install -e`` the example into the running venv (offline: its deps are already there)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # The editable install's .pth is read by new interpreters; make this one see the package too.
    if str(PLUGIN) not in sys.path:
        sys.path.insert(0, str(PLUGIN))
    from pathseg_core.plugins import reset_registry

    reset_registry()


def test_listed_by_plugins_list(installed):
    out = run_pathseg("plugins", "list")
    assert "sam_adapter" in out.stdout and "pathseg-bottleneck-adapter" in out.stdout
    assert "sam " in out.stdout or "│ sam" in out.stdout


def test_fit_third_party_model_on_real_tiles(installed, tmp_path: Path):
    out = run_pathseg("fit", "--model", "sam_adapter", *quick_args(tmp_path, steps=8), "--model.bottleneck", "8")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "train_loss" in metrics and "val_dice_foreground" in metrics
    ckpt = next(tmp_path.rglob("*.ckpt"))
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    adapters = [k for k in state if ".adapters." in k]
    assert adapters, "adapter weights were not saved"
    # the zero-initialised up-projections moved: the adapters trained
    ups = [state[k] for k in adapters if k.endswith("up.weight")]
    assert any(float(u.abs().sum()) > 0 for u in ups)


def test_passes_the_conformance_suite(installed, tmp_path: Path):
    from pathseg_core.testing.conformance import check_model

    assert "train_loss" in check_model("sam_adapter", tmp_path)
