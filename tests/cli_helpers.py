"""Helpers for driving the ``pathseg`` command in tests (in-process and as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "configs" / "sam_ocdc_tiny.yaml"


def quick_args(root: Path, *extra: str, steps: int = 4) -> list[str]:
    """CLI flags for a short, quiet run of the tiny OCDC config writing under ``root``."""
    return [
        "-c", str(CONFIG),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root),
        "--trainer.max_steps", str(steps),
        "--trainer.max_epochs", "1000",
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.limit_val_batches", "2",
        "--trainer.enable_model_summary", "false",
        *extra,
    ]


def run_pathseg(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m pathseg_core ARGS`` in a subprocess, from the repository root."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pathseg_core", *args], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=timeout)


def find_checkpoint(root: Path) -> Path:
    """``last.ckpt`` under ``root`` if present, else the newest ``.ckpt``."""
    last = sorted(root.rglob("last.ckpt"))
    if last:
        return last[-1]
    ckpts = sorted(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert ckpts, f"no checkpoint under {root}"
    return ckpts[-1]
