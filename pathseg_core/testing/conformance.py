"""Conformance suite: what every registered model must do, checked on tiny synthetic data.

``check_model(name)`` builds the plugin's task with its ``ModelSpec.tiny`` arguments, checks
the :class:`~pathseg_core.contracts.PromptableSegmenter` contract, trains a few steps with a
real Lightning ``Trainer``, saves a checkpoint, reloads it with ``weights_only=True`` and
compares the weights, and predicts. Plugin authors call it from their own tests; pathseg's
test suite runs it over every installed plugin, third-party ones included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader

from pathseg_core.contracts import Prediction, PromptableSegmenter, SampleMeta, SegBatch, Targets
from pathseg_core.plugins import registry
from pathseg_core.task import SegmentationTask


def synthetic_sample(num_classes: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An ``[size, size, 3]`` uint8 image of coloured discs and its ``[size, size]`` label map."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int64)
    image = np.full((size, size, 3), 230, dtype=np.uint8)
    colors = rng.integers(0, 200, size=(num_classes, 3))
    for _ in range(3):
        cls = int(rng.integers(1, num_classes))
        cy, cx = rng.integers(size // 5, 4 * size // 5, size=2)
        r = int(rng.integers(size // 10, size // 4))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[disc] = cls
        image[disc] = colors[cls]
    return image, labels


def _batch(samples: list[tuple[np.ndarray, np.ndarray]], with_context: bool, index: int) -> SegBatch:
    images = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).float()
    labels = torch.from_numpy(np.stack([s[1] for s in samples]))
    context = None
    if with_context:  # a concentric 2x field of view: the image shrunk into the centre, white around
        small = torch.nn.functional.interpolate(images, scale_factor=0.5, mode="area")
        context = torch.full_like(images, 255.0)
        s = images.shape[-1]
        context[..., s // 4 : s // 4 + small.shape[-2], s // 4 : s // 4 + small.shape[-1]] = small
    n = len(samples)
    meta = SampleMeta(source_id=[f"synthetic{index}"] * n, level=[0] * n, mpp=[1.0] * n,
                      x=[i * 64 for i in range(n)], y=[0] * n)
    return SegBatch(images=images, context=context, targets=Targets(semantic=labels), meta=meta)


class SyntheticDataModule(LightningDataModule):
    """A handful of seeded synthetic batches (discs of ``num_classes - 1`` classes on white).

    Args:
        num_classes: classes including background 0.
        size: image side.
        batches: batches per split.
        batch_size: images per batch.
        with_context: add concentric context images (for models that need them).
        seed: RNG seed.
    """

    def __init__(self, num_classes: int = 2, size: int = 64, batches: int = 2, batch_size: int = 2,
                 with_context: bool = False, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.num_classes = num_classes
        self._batches = [
            _batch([synthetic_sample(num_classes, size, rng) for _ in range(batch_size)], with_context, i)
            for i in range(batches)
        ]

    def _loader(self) -> DataLoader:
        return DataLoader(self._batches, batch_size=None)

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader()

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader()

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader()

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader()


def build_tiny(name: str) -> SegmentationTask:
    """The registered model ``name`` in its tiny configuration."""
    spec = registry().spec(name)
    cls = registry().resolve_task_class(name)
    task = cls(**spec.tiny)
    assert isinstance(task, SegmentationTask), f"{spec.task} is not a SegmentationTask"
    return task


def check_contract(task: SegmentationTask, dm: SyntheticDataModule) -> None:
    """``encode`` returns an ``embedding``; ``decode`` returns logits for every prompt slot."""
    model = task.model
    assert isinstance(model, PromptableSegmenter), f"{type(model).__name__} is not a PromptableSegmenter"
    batch = dm._batches[0]
    with torch.no_grad():
        features = model.encode(batch.images, batch.context)
        assert "embedding" in features, "encode() must return an 'embedding'"
        prompts, _ = task.make_prompts(batch, "val")
        pred = model.decode(features, prompts)
    assert isinstance(pred, Prediction)
    b = len(batch)
    n = task.hparams.num_classes if model.semantic else prompts.shape[1]
    assert pred.mask_logits.shape[:2] == (b, n), f"mask_logits {list(pred.mask_logits.shape)}, expected [{b}, {n}, h, w]"
    assert torch.isfinite(pred.mask_logits).all()


def check_model(name: str, tmp_dir: str | Path, steps: int = 2) -> dict[str, float]:
    """Run the whole conformance check for one registered model; returns the final logged metrics."""
    tmp_dir = Path(tmp_dir)
    torch.manual_seed(0)
    task = build_tiny(name)
    dm = SyntheticDataModule(num_classes=task.hparams.num_classes, with_context=task.model.needs_context)
    check_contract(task, dm)
    trainable = {k: v.detach().clone() for k, v in task.named_parameters() if v.requires_grad}
    assert trainable, f"{name}: the tiny configuration has no trainable parameter"
    trainer = Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                      default_root_dir=tmp_dir)
    trainer.fit(task, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    changed = [k for k, v in task.named_parameters() if k in trainable and not torch.equal(v, trainable[k])]
    assert changed, f"{name}: training changed no trainable parameter"
    ckpt = tmp_dir / f"{name}.ckpt"
    trainer.save_checkpoint(ckpt)
    reloaded = type(task).load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    for key, value in task.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), f"{name}: {key} differs after reload"
    out = trainer.predict(reloaded, datamodule=dm)
    assert out and ("labels" in out[0] or "probs" in out[0])
    return metrics
