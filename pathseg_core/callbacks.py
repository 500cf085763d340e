"""Lightning callbacks: example overlays for the logger, and config logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger
from PIL import Image

from pathseg_core.contracts import SegBatch
from pathseg_core.visualize import palette, panel


class LogConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` as Lightning does *and* send the full config to the logger (W&B)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: ARG002
        """Log the resolved CLI config as hyper-parameters under ``config``."""
        if isinstance(trainer.logger, Logger):
            trainer.logger.log_hyperparams({"config": self.config.as_dict()})


class OverlayImages(Callback):
    """Render ``image | truth | prediction`` panels for the first validation batch of each epoch.

    Panels go to ``<log_dir>/overlays/epoch<N>_<i>.png`` and, with a
    :class:`~lightning.pytorch.loggers.WandbLogger`, to W&B as images.

    Args:
        max_images: panels per epoch.
    """

    def __init__(self, max_images: int = 4) -> None:
        self.max_images = max_images

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object,
                                batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Draw panels from batch 0 on rank 0."""
        if batch_idx != 0 or trainer.sanity_checking or self.max_images <= 0:
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask, not only rank 0
        if not trainer.is_global_zero:
            return
        panels = render_panels(pl_module, batch, self.max_images)
        out_dir = Path(log_dir or trainer.default_root_dir) / "overlays"
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(panels):
            Image.fromarray(img).save(out_dir / f"epoch{trainer.current_epoch:03d}_{i}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val_overlays", images=list(panels), step=trainer.global_step)


@torch.no_grad()
def render_panels(task: LightningModule, batch: SegBatch, max_images: int) -> list[np.ndarray]:
    """Predict on a batch and return up to ``max_images`` uint8 panels (semantic or promptable)."""
    out = task.predict_step(batch, 0)
    images = batch.images[:max_images].clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    truth = batch.targets.semantic if batch.targets is not None else None
    if "labels" in out:
        pred = out["labels"]
        colors = palette(task.hparams.num_classes)
    else:  # promptable: union of the per-prompt masks, class-agnostic foreground
        probs = out["probs"] * out["valid"][..., None, None]
        pred = (probs > 0.5).any(1).long()
        colors = palette(max(2, task.hparams.num_classes))
    panels = []
    for i in range(len(images)):
        t = None if truth is None else truth[i].cpu().numpy()
        panels.append(panel(images[i], t, pred[i].cpu().numpy(), colors))
    return panels
