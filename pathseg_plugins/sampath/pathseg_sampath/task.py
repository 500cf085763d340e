"""``SamPathTask``: SAM-Path training and evaluation on the shared loop.

Presets:

* ``loss_preset``: the paper's best loss weights (Fig. 4): ``bcss`` ``α = 0.25, β = 0.0625``;
  ``crag`` ``α = 0.125, β = 0``.
* ``code_preset``: ``paper`` (pathseg's reading of the paper: ``k`` class tokens, unlabelled
  pixels masked out of the loss, IoU target 1 for absent classes, correct metrics only) or
  ``official_code`` (``k + 1`` tokens, unlabelled logits zeroed, IoU target 0 for absent
  classes, and the official metric definitions logged beside the correct ones).

Any individual switch given explicitly overrides its preset. Trained: the neck ``R``, the
class-prompt mask decoder (its IoU head only when ``β > 0``; the extra token's hypernetwork MLP
never, its output being dropped); SAM and HIPT are frozen.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from pathseg_core.contracts import PromptableSegmenter
from pathseg_core.models.adapters import freeze, unfreeze
from pathseg_core.task import ConfigError, SegmentationTask
from pathseg_sampath.loss import IgnoreMode, SamPathLoss
from pathseg_sampath.metrics import official_metrics
from pathseg_sampath.model import Encoders, SamPathSegmenter

__all__ = ["CODE_PRESETS", "LOSS_PRESETS", "SamPathTask"]

#: Paper Fig. 4 best weights per dataset: ``(α, β)``.
LOSS_PRESETS: dict[str, tuple[float, float]] = {"bcss": (0.25, 0.0625), "crag": (0.125, 0.0)}
#: Switch values of each code preset.
CODE_PRESETS: dict[str, dict[str, object]] = {
    "paper": {"extra_token": False, "ignore_mode": "mask", "empty_iou": 1.0, "official_metrics": False},
    "official_code": {"extra_token": True, "ignore_mode": "zero_logits", "empty_iou": 0.0, "official_metrics": True},
}


class SamPathTask(SegmentationTask):
    """SAM-Path (Zhang et al., MedAGI @ MICCAI 2023).

    Args:
        sam_backbone: SAM configuration (``tiny`` is a random-initialised test size).
        sam_checkpoint: official SAM checkpoint (``sam_vit_b_01ec64.pth``) or None.
        hipt_backbone: HIPT configuration (``vit_s16``: HIPT's ViT-256; ``tiny`` for tests).
        hipt_checkpoint: official ``vit256_small_dino.pth`` or None.
        encoder_input_size: encoder input side (default: the SAM configuration's, 1024).
        encoders: ``both`` (paper), ``sam`` (ablation "without F_p"), ``hipt`` ("without F_s").
        loss_preset: ``bcss`` or ``crag`` loss weights (module docstring).
        code_preset: ``paper`` or ``official_code`` (module docstring).
        alpha: focal weight ``α`` (None: from ``loss_preset``).
        beta: IoU-MSE weight ``β`` (None: from ``loss_preset``).
        extra_token: ``k + 1`` class tokens (None: from ``code_preset``).
        ignore_mode: ``mask`` or ``zero_logits`` (None: from ``code_preset``).
        empty_iou: IoU-MSE target for a class absent from prediction and label (None: preset).
        official_metrics: also log the official metric definitions (None: from ``code_preset``).
        official_dropped_class: class whose label pixels the official metrics drop (binary
            gland / tumour configs: 0, background), or None (BCSS).
        **kwargs: the shared task options (:class:`~pathseg_core.task.SegmentationTask`); its
            loss-weight options are unused (the loss is SAM-Path's).
    """

    def __init__(
        self,
        sam_backbone: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "vit_b",
        sam_checkpoint: str | None = None,
        hipt_backbone: Literal["tiny", "vit_s16"] = "vit_s16",
        hipt_checkpoint: str | None = None,
        encoder_input_size: int | None = None,
        encoders: Encoders = "both",
        loss_preset: Literal["bcss", "crag"] = "bcss",
        code_preset: Literal["paper", "official_code"] = "paper",
        alpha: float | None = None,
        beta: float | None = None,
        extra_token: bool | None = None,
        ignore_mode: IgnoreMode | None = None,
        empty_iou: float | None = None,
        official_metrics: bool | None = None,
        official_dropped_class: int | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("num_classes", 5)
        kwargs.setdefault("optimizer", "adamw")
        kwargs.setdefault("lr", 1e-4)
        kwargs.setdefault("weight_decay", 1e-2)
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ switches
    def switch(self, name: str) -> object:
        """A switch's effective value: the explicit hyper-parameter, else its preset's."""
        value = self.hparams.get(name)
        if value is not None:
            return value
        if name in ("alpha", "beta"):
            return LOSS_PRESETS[self.hparams.loss_preset][0 if name == "alpha" else 1]
        return CODE_PRESETS[self.hparams.code_preset][name]

    # ------------------------------------------------------------------ parts
    def configure_models(self) -> PromptableSegmenter:
        """Build SAM-Path and set what trains (see the module docstring)."""
        hp = self.hparams
        overrides = {} if hp.encoder_input_size is None else {"image_size": hp.encoder_input_size}
        model = SamPathSegmenter.build(
            hp.num_classes,
            sam=hp.sam_backbone,
            sam_checkpoint=hp.sam_checkpoint,
            hipt=hp.hipt_backbone,
            hipt_checkpoint=hp.hipt_checkpoint,
            encoders=hp.encoders,
            extra_token=bool(self.switch("extra_token")),
            **overrides,
        )
        return set_trainable(model, train_iou_head=float(self.switch("beta")) > 0)

    def configure_losses(self) -> nn.Module:
        """Paper eq. 3 with the effective ``α``, ``β`` and ignore handling."""
        return SamPathLoss(
            alpha=float(self.switch("alpha")),
            beta=float(self.switch("beta")),
            ignore_mode=self.switch("ignore_mode"),
            empty_iou=float(self.switch("empty_iou")),
        )

    def configure_metrics(self) -> None:
        """Core metrics (correct micro / macro / per class) plus, if switched on, the official ones."""
        super().configure_metrics()
        if not self.switch("official_metrics"):
            return
        hp = self.hparams
        dropped = hp.official_dropped_class
        if dropped is not None and not 0 <= dropped < hp.num_classes:
            raise ConfigError(f"official_dropped_class {dropped} is not a class id in [0, {hp.num_classes})")
        for stage in ("train", "val", "test"):
            getattr(self, f"{stage}_metrics").add_metrics(official_metrics(hp.num_classes, dropped, hp.ignore_index))


def set_trainable(model: SamPathSegmenter, *, train_iou_head: bool) -> SamPathSegmenter:
    """Freeze SAM, HIPT and the prompt encoder; train the neck and the class-prompt decoder.

    Parts that no loss term reaches are frozen too, so ``requires_grad`` equals "receives a
    gradient": the IoU head when ``β = 0``, and the extra token's hypernetwork MLP.
    """
    freeze(model)
    patterns = ["mask_decoder.*"] + (["neck.*"] if model.encoders != "sam" else [])
    unfreeze(model, patterns)
    if not train_iou_head:
        freeze(model.mask_decoder.iou_prediction_head)
    if model.extra_token:
        freeze(model.mask_decoder.output_hypernetworks_mlps[0])
    return model
