"""``WSISamTask``: WSI-SAM's loss, prompt protocol and switches on the shared pathseg loop.

Loss (paper): ``L = λ · L_high + (1 − λ) · L_low``, each ``Dice + BCE``, ``λ = 0.5``. The HR
term compares the HR logits with the prompted object in the HR patch, the LR term the LR
logits with the same object in the concentric LR patch.

Every place where the official code differs from the paper is a named switch whose default
is the paper's choice; ``official_code=True`` turns all of them to the code's behaviour
(:func:`resolve_switches`). See the plugin README for file and line evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from pathseg_core.contracts import Prediction, PromptableSegmenter, Prompts, SegBatch, Targets
from pathseg_core.losses import SegmentationLoss
from pathseg_core.prompts import PromptSampler, noisy_mask_prompt, sample_points
from pathseg_core.task import ConfigError, SegmentationTask, Stage
from pathseg_wsisam.geometry import DualPrompts, DualTargets, map_masks
from pathseg_wsisam.model import Aggregation, Backbone, build_wsisam


@dataclass(frozen=True)
class Switches:
    """The paper-vs-code choices in effect (see :func:`resolve_switches`).

    Attributes:
        aggregation: token aggregation (paper ``avg``, code ``sum``).
        loss_form: ``weighted`` ``λ·L_high + (1−λ)·L_low`` (paper) or ``sum_of_four``
            ``Dice_H + BCE_H + Dice_L + BCE_L`` (code).
        dice_squared: MONAI ``squared_pred`` Dice denominators (code).
        dice_smooth: Dice smoothing (MONAI's ``1e-5`` in the code).
        add_sam_logits: add the frozen decoder's token-0 logits to the HR logits at inference (code).
        context_box_rounding: LR boxes as floats (paper / training code) or floored at inference.
        context_prompts: LR points and mask prompts ``mapped`` from the HR ones, or
            ``resampled`` from the LR mask in training (code).
    """

    aggregation: str = "avg"
    loss_form: str = "weighted"
    dice_squared: bool = False
    dice_smooth: float = 1.0
    add_sam_logits: bool = False
    context_box_rounding: str = "float"
    context_prompts: str = "mapped"


#: The official code's value of every switch (``official_code=True``).
OFFICIAL_CODE = Switches(
    aggregation="sum",
    loss_form="sum_of_four",
    dice_squared=True,
    dice_smooth=1e-5,
    add_sam_logits=True,
    context_box_rounding="floor",
    context_prompts="resampled",
)


def resolve_switches(official_code: bool, **given: object) -> Switches:
    """The given switch values, or :data:`OFFICIAL_CODE` entirely when ``official_code`` is set."""
    if official_code:
        return OFFICIAL_CODE
    names = {f.name for f in fields(Switches)}
    return Switches(**{k: v for k, v in given.items() if k in names})  # type: ignore[arg-type]


def context_object_masks(hr_masks: Tensor, class_ids: Tensor, context_labels: Tensor | None, factor: float) -> Tensor:
    """Each prompted object in the LR patch.

    With LR labels, the object is every connected component of its class in the LR label
    map that overlaps the HR object mapped into the LR frame (so it extends beyond the HR
    field of view, as the official LR masks do); without LR labels, the mapped HR mask.

    Args:
        hr_masks: ``[B, N, H, W]`` HR object masks.
        class_ids: ``[B, N]`` class of each object.
        context_labels: ``[B, H, W]`` LR label map or ``None``.
        factor: LR field of view / HR field of view.

    Returns:
        ``[B, N, H, W]`` float LR object masks.
    """
    mapped = map_masks(hr_masks.float(), factor, 0.0) > 0.5
    if context_labels is None:
        return mapped.float()
    out = torch.zeros_like(hr_masks, dtype=torch.float32)
    labels = context_labels.cpu().numpy()
    for i in range(hr_masks.shape[0]):
        for j in range(hr_masks.shape[1]):
            seed = mapped[i, j].cpu().numpy()
            if not seed.any():
                continue
            comp, _ = ndimage.label(labels[i] == int(class_ids[i, j]), structure=np.ones((3, 3), bool))
            keep = np.unique(comp[seed & (comp > 0)])
            obj = np.isin(comp, keep[keep > 0]) | seed
            out[i, j] = torch.from_numpy(obj).to(out)
    return out


class WSISamTask(SegmentationTask):
    """WSI-SAM (Liu et al., 2024): frozen SAM, HR/LR tokens, dual decoder, token aggregation.

    Args:
        backbone: ``tinyvit`` (MobileSAM, the paper's), ``vit_b`` / ``vit_l`` / ``vit_h``, or
            the CPU test sizes ``tiny`` / ``tinyvit_tiny``.
        checkpoint: official SAM / MobileSAM weights path (random init without).
        encoder_input_size: encoder input side (default: the backbone's).
        aggregation: token aggregation ``avg`` (paper) | ``sum`` (code) | ``max`` | ``concat_fc``.
        loss_lambda: ``λ`` of ``λ·L_high + (1−λ)·L_low``.
        loss_form: ``weighted`` (paper) or ``sum_of_four`` (code).
        dice_squared: squared Dice denominators (code: MONAI ``squared_pred=True``).
        dice_smooth: Dice smoothing constant.
        add_sam_logits: add the frozen SAM decoder's token-0 logits to HR logits at inference.
        context_box_rounding: ``float`` LR boxes, or ``floor`` at inference (code).
        context_prompts: ``mapped`` LR points / masks, or ``resampled`` from the LR mask in training.
        context_factor: LR field of view / HR field of view (data must match).
        blank_context: ablation: replace the LR patch by a constant image (zeros).
        train_preset: training prompt protocol (``wsisam_train``: box / 10 points / noisy
            mask); ``None`` uses the shared ``train_prompt`` options.
        background_class: label id never prompted as an object (``None``: every class is
            an object, e.g. BCSS where id 0 is tumour).
        official_code: set every switch to the official code's behaviour.
        **kwargs: the shared task options (:class:`~pathseg_core.task.SegmentationTask`).
    """

    def __init__(
        self,
        backbone: Backbone = "tinyvit",
        checkpoint: str | None = None,
        encoder_input_size: int | None = None,
        aggregation: Aggregation = "avg",
        loss_lambda: float = 0.5,
        loss_form: Literal["weighted", "sum_of_four"] = "weighted",
        dice_squared: bool = False,
        dice_smooth: float = 1.0,
        add_sam_logits: bool = False,
        context_box_rounding: Literal["float", "floor"] = "float",
        context_prompts: Literal["mapped", "resampled"] = "mapped",
        context_factor: float = 2.0,
        blank_context: bool = False,
        train_preset: Literal["wsisam_train"] | None = "wsisam_train",
        background_class: int | None = 0,
        official_code: bool = False,
        **kwargs,
    ) -> None:
        if not 0.0 <= loss_lambda <= 1.0:
            raise ConfigError(f"loss_lambda {loss_lambda} must be in [0, 1] (--model.loss_lambda)")
        super().__init__(**kwargs)

    @property
    def switches(self) -> Switches:
        """The switches in effect (``official_code`` overrides the individual ones)."""
        hp = self.hparams
        return resolve_switches(hp.official_code, **{k: hp[k] for k in asdict(Switches()) if k in hp})

    def configure_models(self) -> PromptableSegmenter:
        """Build WSI-SAM on the backbone with the switches' model-side choices."""
        hp, sw = self.hparams, self.switches
        return build_wsisam(
            hp.backbone,
            hp.checkpoint,
            image_size=hp.encoder_input_size,
            aggregation=sw.aggregation,
            add_sam_logits=sw.add_sam_logits,
            context_factor=hp.context_factor,
            floor_context_boxes=sw.context_box_rounding == "floor",
        )

    def configure_losses(self) -> torch.nn.Module:
        """Dice + BCE, applied to each resolution by :meth:`compute_loss`."""
        sw = self.switches
        return SegmentationLoss(dice=1.0, bce=1.0, dice_squared=sw.dice_squared, dice_smooth=sw.dice_smooth)

    def configure_prompts(self) -> tuple[PromptSampler, PromptSampler]:
        """The ``train_preset`` training protocol (if set) and the ``eval_protocol`` sampler."""
        hp = self.hparams
        common = {
            "object_mode": hp.object_mode,
            "max_objects": hp.max_objects,
            "min_area": hp.min_object_area,
            "background": -1 if hp.background_class is None else hp.background_class,
        }
        if hp.train_preset is not None:
            train = PromptSampler.from_preset(hp.train_preset, **common)
        else:
            train = PromptSampler(mode=hp.train_prompt, box_jitter=hp.train_box_jitter, n_pos=hp.train_points, **common)
        return train, self.eval_sampler_for(hp.eval_protocol, **common)

    def setup(self, stage: str) -> None:
        """Also check that the data yields concentric context at this model's scale."""
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        dhp = getattr(dm, "hparams", {}) or {}
        if dhp.get("sampling") not in (None, "concentric"):
            raise ConfigError(
                f"WSI-SAM needs concentric LR context but the data samples {dhp.get('sampling')!r}; "
                "set data.sampling: concentric"
            )
        factor = dhp.get("context_factor")
        if factor is not None and float(factor) != float(self.hparams.context_factor):
            raise ConfigError(
                f"the data's context patch has {factor}x the HR field of view but the model expects "
                f"{self.hparams.context_factor}x; set data.context_factor and model.context_factor alike"
            )

    def encode(self, batch: SegBatch) -> dict[str, Tensor]:
        """Encode HR and LR (the LR patch replaced by zeros with ``blank_context``)."""
        if self.hparams.blank_context and batch.context is not None:
            batch = replace(batch, context=torch.zeros_like(batch.context))
        return super().encode(batch)

    def make_prompts(self, batch: SegBatch, stage: Stage) -> tuple[Prompts | None, Targets]:
        """HR prompts / targets (shared sampler) plus the LR targets and, if resampled, LR prompts."""
        prompts, targets = super().make_prompts(batch, stage)
        if prompts is None or targets.masks is None:
            return prompts, targets
        factor = float(self.hparams.context_factor)
        ctx_labels = None if batch.context_targets is None else batch.context_targets.semantic
        class_ids = targets.class_ids if targets.class_ids is not None else torch.ones(prompts.shape, dtype=torch.long)
        lr_masks = context_object_masks(targets.masks, class_ids, ctx_labels, factor).to(targets.masks.device)
        lr_prompts = None
        if stage == "train" and self.switches.context_prompts == "resampled":
            lr_prompts = self._resample_context_prompts(prompts, lr_masks, batch.image_size)
        dual = DualPrompts(**{f.name: getattr(prompts, f.name) for f in fields(Prompts)}, context=lr_prompts)
        dual_targets = DualTargets(
            **{f.name: getattr(targets, f.name) for f in fields(Targets)}, context_masks=lr_masks
        )
        return dual, dual_targets

    def _resample_context_prompts(self, prompts: Prompts, lr_masks: Tensor, size_hw: tuple[int, int]) -> Prompts | None:
        """Official training: LR points / noisy masks drawn from the LR object mask; boxes stay mapped."""
        if prompts.points is None and prompts.masks is None:
            return None
        g, sampler = self._train_generator(), self.train_sampler
        out = Prompts(valid=prompts.valid, kind=prompts.kind)
        valid = prompts.valid_mask()
        if prompts.points is not None:
            out.points, out.point_labels = torch.zeros_like(prompts.points), prompts.point_labels.clone()
        if prompts.masks is not None:
            out.masks = prompts.masks.clone()
        for i, j in valid.nonzero().tolist():
            obj = lr_masks[i, j].bool().cpu()
            if not obj.any():
                continue
            if out.points is not None:
                n_pos = int((prompts.point_labels[i, j] == 1).sum())
                n_neg = prompts.points.shape[2] - n_pos
                pts, lbl = sample_points(obj, n_pos, n_neg, g)
                out.points[i, j], out.point_labels[i, j] = pts.to(out.points), lbl.to(out.point_labels)
            if out.masks is not None:
                noisy = noisy_mask_prompt(
                    obj,
                    sampler.mask_size,
                    g,
                    sampler.mask_sigma,
                    band_width=sampler.mask_band,
                    logit_value=sampler.mask_logit,
                )
                out.masks[i, j] = noisy.to(out.masks)
        return out

    def compute_loss(self, logits: Tensor, pred: Prediction, prompts: Prompts | None, targets: Targets) -> dict:
        """``λ·(Dice + BCE)(HR) + (1 − λ)·(Dice + BCE)(LR)``, or the code's plain sum of the four terms."""
        valid = prompts.valid_mask().to(logits.dtype)[..., None, None].expand_as(logits)
        hr = self.loss_fn(logits, targets.masks.to(logits.dtype), mask=valid)
        lr_targets = getattr(targets, "context_masks", None)
        if lr_targets is None:
            lr_targets = map_masks(targets.masks.float(), float(self.hparams.context_factor), 0.0)
        lr_logits = self.upsample(pred.extras["context_logits"].float(), tuple(lr_targets.shape[-2:]))
        lr = self.loss_fn(lr_logits, lr_targets.to(logits.dtype), mask=valid)
        if self.switches.loss_form == "sum_of_four":
            total = hr["loss"] + lr["loss"]
        else:
            lam = float(self.hparams.loss_lambda)
            total = lam * hr["loss"] + (1.0 - lam) * lr["loss"]
        return {"loss": total, "high": hr["loss"], "low": lr["loss"]}
