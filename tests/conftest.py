"""Shared test set-up: offline W&B in a temp folder, quiet logs, the shared data root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="pathseg-tests-"))
for var, sub in (
    ("WANDB_DIR", "wandb"),
    ("WANDB_CACHE_DIR", "wandb-cache"),
    ("WANDB_CONFIG_DIR", "wandb-config"),
    ("WANDB_DATA_DIR", "wandb-data"),
    ("PATHSEG_CACHE", "cache"),
):
    os.environ.setdefault(var, str(_TMP / sub))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real data (``$PATHSEG_DATA`` or ``../shared/data``)."""
    from pathseg_core.data.paths import data_root as root

    path = root()
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}; set PATHSEG_DATA")
    return path
