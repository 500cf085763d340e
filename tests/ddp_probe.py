"""A callback the DDP test passes on the command line: each rank writes what it ended with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RankProbe(Callback):
    """Write ``rank<N>.json`` with a digest of the parameters and the validation metrics.

    Args:
        out_dir: folder for the per-rank files.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if trainer.sanity_checking:
            return
        digest = hashlib.sha256()
        for name, p in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world": trainer.world_size,
            "step": trainer.global_step,
            "params": digest.hexdigest(),
            "metrics": metrics,
            "threads": torch.get_num_threads(),
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
