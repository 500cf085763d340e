"""Where the shared real data lives."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The shared data folder: ``$PATHSEG_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("PATHSEG_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data"
