"""``SegmentationTask``: the one training / evaluation loop every plugin shares.

A plugin subclasses it and fills in :meth:`SegmentationTask.configure_models` (and, if
the paper has its own loss, :meth:`configure_losses`). It does not re-write
``training_step``. Hyper-parameters are flat and typed so LightningCLI / jsonargparse
validates and documents them, and so checkpoints hold only primitives (they load with
``torch.load(weights_only=True)``).

Two kinds of model share the loop:

* **promptable** (``model.semantic is False``): prompts are simulated on the fly from the
  batch's label maps by :class:`~pathseg_core.prompts.PromptSampler` (the training
  protocol, or a seeded evaluation protocol such as ``noisy_box`` / ``points5``), the
  model predicts one mask per prompt, and Dice / IoU are binary per object;
* **semantic** (``model.semantic is True``): one output channel per class, targets are
  the label map, metrics are multiclass (micro, macro, per class) with ``ignore_index``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from pathseg_core.contracts import IGNORE_INDEX, Prediction, PromptableSegmenter, Prompts, SegBatch, Targets
from pathseg_core.losses import SegmentationLoss
from pathseg_core.metrics import build_metrics
from pathseg_core.prompts import PRESETS, PromptSampler, eval_generator, sample_key, stack_prompt_samples

Stage = Literal["train", "val", "test"]
EvalProtocol = Literal["box", "noisy_box", "points1", "points3", "points5", "points10", "mask"]


class ConfigError(ValueError):
    """Model and data configurations that do not fit together."""


class SegmentationTask(LightningModule):
    """Template task: subclasses build the model, this class trains and evaluates it.

    Args:
        num_classes: label-map classes including background (2 for binary masks).
        class_names: names of the classes (for logs, GeoJSON and overlays).
        ignore_index: label value skipped by losses and metrics.
        train_prompt: prompt type simulated for training (``mixed`` draws one of box /
            points / mask per object, as WSI-SAM trains).
        train_box_jitter: relative box noise in training (0 = tight boxes).
        train_points: positive points per object in training.
        eval_protocol: prompts used in validation / test, seeded so every run sees the same
            ones: ``box`` (tight), ``noisy_box`` (WSI-SAM's box noise, see
            :data:`~pathseg_core.prompts.PRESETS`), ``pointsK`` (K positive points), ``mask``
            (noisy coarse mask).
        object_mode: objects are connected ``components`` of each class or whole ``classes``.
        max_objects: most objects (prompts) per image.
        min_object_area: smaller objects are not prompted.
        prompt_seed: seed of the evaluation prompts.
        dice_weight: weight of the Dice loss term.
        bce_weight: weight of the binary cross-entropy term.
        focal_weight: weight of the sigmoid focal term.
        ce_weight: weight of the softmax cross-entropy term (semantic models).
        iou_weight: weight of the IoU-prediction MSE term.
        optimizer: optimiser over the trainable parameters.
        lr: learning rate.
        weight_decay: weight decay.
        scheduler: ``constant``, ``cosine`` (to ``max_epochs``) or ``warmup_step``
            (linear warm-up for ``warmup_epochs``, then ×``gamma`` at each of ``milestones``).
        warmup_epochs: warm-up length for ``warmup_step``.
        milestones: epochs at which ``warmup_step`` decays.
        gamma: decay factor.
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        train_prompt: Literal["box", "points", "mask", "mixed"] = "box",
        train_box_jitter: float = 0.1,
        train_points: int = 1,
        eval_protocol: EvalProtocol = "noisy_box",
        object_mode: Literal["components", "classes"] = "components",
        max_objects: int = 8,
        min_object_area: int = 16,
        prompt_seed: int = 0,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        focal_weight: float = 0.0,
        ce_weight: float = 0.0,
        iou_weight: float = 0.0,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        scheduler: Literal["constant", "cosine", "warmup_step"] = "constant",
        warmup_epochs: int = 0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        self.model: PromptableSegmenter = self.configure_models()
        self.loss_fn = self.configure_losses()
        self.configure_metrics()
        self.train_sampler, self.eval_sampler = self.configure_prompts()

    # -- what plugins fill in ------------------------------------------------------------
    def configure_models(self) -> PromptableSegmenter:
        """Build and return the model (freezing / adapters applied). Plugins override."""
        raise NotImplementedError(f"{type(self).__name__} must implement configure_models()")

    def configure_losses(self) -> torch.nn.Module:
        """The loss module; the default composes Dice / BCE / focal / CE / IoU-MSE terms."""
        hp = self.hparams
        return SegmentationLoss(
            dice=hp.dice_weight, bce=hp.bce_weight, focal=hp.focal_weight, ce=hp.ce_weight, iou_mse=hp.iou_weight
        )

    def configure_metrics(self) -> None:
        """One MetricCollection cloned per stage (``train_`` / ``val_`` / ``test_``)."""
        hp = self.hparams
        if self.model.semantic:
            base = build_metrics(
                hp.num_classes, task="multiclass", ignore_index=hp.ignore_index, class_names=self.class_names
            )
        else:
            base = build_metrics(2, task="binary", ignore_index=hp.ignore_index)
        self.train_metrics = base.clone(prefix="train_")
        self.val_metrics = base.clone(prefix="val_")
        self.test_metrics = base.clone(prefix="test_")

    def configure_prompts(self) -> tuple[PromptSampler, PromptSampler]:
        """Training and evaluation prompt samplers built from the flat hyper-parameters."""
        hp = self.hparams
        common = {"object_mode": hp.object_mode, "max_objects": hp.max_objects, "min_area": hp.min_object_area}
        train = PromptSampler(mode=hp.train_prompt, box_jitter=hp.train_box_jitter, n_pos=hp.train_points, **common)
        return train, self.eval_sampler_for(hp.eval_protocol, **common)

    def eval_sampler_for(self, protocol: str, **common: Any) -> PromptSampler:
        """The seeded evaluation sampler for a protocol name (``noisy_box``, ``points5`` …)."""
        if protocol in PRESETS:
            return PromptSampler.from_preset(protocol, **common)
        if protocol == "mask":
            return PromptSampler(mode="mask", **common)
        if protocol.startswith("points") and protocol[6:].isdigit():
            return PromptSampler(mode="points", n_pos=int(protocol[6:]), n_neg=0, **common)
        raise ConfigError(f"unknown eval_protocol '{protocol}'; use box, noisy_box, mask or pointsK (e.g. points5)")

    # -- helpers -------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Class names (``class_<i>`` when none were given)."""
        names = self.hparams.class_names
        return list(names) if names else [f"class_{i}" for i in range(self.hparams.num_classes)]

    def setup(self, stage: str) -> None:
        """Check that the datamodule's classes match the model's (one clear error if not)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        n_data = getattr(dm, "num_classes", None)
        if n_data is not None and int(n_data) != int(self.hparams.num_classes):
            raise ConfigError(
                f"the data has {n_data} classes but the model was built for {self.hparams.num_classes}; "
                f"set --model.num_classes {n_data} (and class_names) or use a matching class map"
            )

    def encode(self, batch: SegBatch) -> dict[str, Tensor]:
        """Run the encoder; without gradients when it is frozen (saves memory and time)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.model.encoder_is_trainable()):
            return self.model.encode(batch.images, batch.context)

    def make_prompts(self, batch: SegBatch, stage: Stage) -> tuple[Prompts | None, Targets]:
        """Prompts and matching targets for a batch: given ones, simulated ones, or none (semantic)."""
        targets = batch.targets
        if self.model.semantic:
            if targets is None or targets.semantic is None:
                raise ConfigError("a semantic model needs label maps (targets.semantic) to train or evaluate")
            return None, targets
        if batch.prompts is not None and targets is not None and targets.masks is not None:
            return batch.prompts, targets
        if targets is None or targets.semantic is None:
            raise ConfigError("a promptable model needs prompts or label maps to derive them from")
        labels = targets.semantic.cpu()
        if stage == "train":
            prompts, obj_targets = self.train_sampler(labels, generator=self._train_generator())
        else:
            # One generator per image, keyed by its source and offset: evaluation prompts are
            # identical whatever the batch size, loader order or number of DDP ranks.
            meta = batch.meta
            keys = [sample_key(s, x, y) for s, x, y in zip(meta.source_id, meta.x, meta.y)]
            if len(keys) != len(labels):
                keys = list(range(len(labels)))
            prompts, obj_targets = stack_prompt_samples([
                self.eval_sampler(labels[i : i + 1], generator=eval_generator(self.hparams.prompt_seed, keys[i]))
                for i in range(len(labels))
            ])
        return prompts.to(self.device), obj_targets.to(self.device)

    def _train_generator(self) -> torch.Generator:
        """One generator per process for training prompts, seeded by ``prompt_seed`` and rank."""
        if getattr(self, "_train_gen", None) is None:
            self._train_gen = torch.Generator().manual_seed(self.hparams.prompt_seed * 1000 + self.global_rank)
        return self._train_gen

    @staticmethod
    def upsample(logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Bilinear resize of ``[B, N, h, w]`` logits to ``size``."""
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    # -- the loop ------------------------------------------------------------------------
    def shared_step(self, batch: SegBatch, stage: Stage) -> tuple[Tensor, Prediction, Prompts | None, Targets]:
        """Encode, decode, compute the loss and update the stage's metrics."""
        prompts, targets = self.make_prompts(batch, stage)
        features = self.encode(batch)
        pred = self.model.decode(features, prompts)
        logits = self.upsample(pred.mask_logits.float(), batch.image_size)
        losses = self.compute_loss(logits, pred, prompts, targets)
        self.update_metrics(stage, logits, prompts, targets)
        bs = len(batch)
        for name, value in losses.items():
            key = f"{stage}_loss" if name == "loss" else f"{stage}_loss_{name}"
            self.log(key, value, batch_size=bs, prog_bar=name == "loss", sync_dist=stage != "train")
        return losses["loss"], pred, prompts, targets

    def compute_loss(self, logits: Tensor, pred: Prediction, prompts: Prompts | None, targets: Targets) -> dict:
        """Loss terms for semantic (label map) or promptable (per-object masks) output."""
        if self.model.semantic:
            return self.loss_fn(logits, None, labels=targets.semantic, ignore_index=targets.ignore_index,
                                iou_pred=pred.iou_pred)
        valid = prompts.valid_mask().to(logits.dtype)[..., None, None]
        return self.loss_fn(logits, targets.masks.to(logits.dtype), mask=valid.expand_as(logits),
                            iou_pred=pred.iou_pred)

    def update_metrics(self, stage: Stage, logits: Tensor, prompts: Prompts | None, targets: Targets) -> None:
        """Feed hard predictions to the stage's MetricCollection."""
        metrics = getattr(self, f"{stage}_metrics")
        with torch.no_grad():
            if self.model.semantic:
                metrics.update(logits.argmax(1), targets.semantic)
            else:
                valid = prompts.valid_mask()
                if valid.any():
                    metrics.update((logits[valid] > 0).long(), targets.masks[valid].long())

    def training_step(self, batch: SegBatch, batch_idx: int) -> Tensor:  # noqa: D102
        loss, *_ = self.shared_step(batch, "train")
        return loss

    def on_train_epoch_end(self) -> None:  # noqa: D102
        self._log_metrics("train")

    def validation_step(self, batch: SegBatch, batch_idx: int) -> None:  # noqa: D102
        self.shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._log_metrics("val")

    def test_step(self, batch: SegBatch, batch_idx: int) -> None:  # noqa: D102
        self.shared_step(batch, "test")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._log_metrics("test")

    def _log_metrics(self, stage: Stage) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        flat: dict[str, Tensor] = {}
        for name, value in values.items():
            if isinstance(value, dict):
                flat.update(value)
            else:
                flat[name] = value
        self.log_dict(flat, sync_dist=False, prog_bar=False)
        metrics.reset()

    def predict_step(self, batch: SegBatch, batch_idx: int) -> dict[str, Any]:
        """Per-image outputs: label maps (semantic) or per-prompt probabilities (promptable)."""
        prompts = batch.prompts
        if not self.model.semantic and prompts is None:
            prompts, _ = self.make_prompts(batch, "test")
        pred = self.model.decode(self.encode(batch), prompts)
        logits = self.upsample(pred.mask_logits.float(), batch.image_size)
        out: dict[str, Any] = {"meta": batch.meta}
        if self.model.semantic:
            out["labels"] = logits.argmax(1)
            out["probs"] = logits.softmax(1)
        else:
            out["probs"] = logits.sigmoid()
            out["valid"] = prompts.valid_mask()
            out["iou_pred"] = pred.iou_pred
        return out

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """Optimiser over trainable parameters + the configured schedule (stepped per epoch)."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"{type(self).__name__} has no trainable parameters; check the finetune / freeze settings")
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay, momentum=0.9)
        if hp.scheduler == "constant":
            return {"optimizer": opt}
        if hp.scheduler == "cosine":
            epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        else:
            milestones = sorted(hp.milestones or [])
            warm = hp.warmup_epochs

            def factor(epoch: int) -> float:
                if warm and epoch < warm:
                    return (epoch + 1) / (warm + 1)
                return hp.gamma ** sum(epoch >= m for m in milestones)

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
