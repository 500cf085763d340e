"""SAM-Path (Zhang et al. 2023) as a semantic :class:`~pathseg_core.contracts.PromptableSegmenter`.

``encode`` (frozen): SAM's ViT without its neck, ``F_s(x)`` ``[B, 768, 64, 64]``, and HIPT's
ViT-S/16 on the same 1024² input, ``F_p(x)`` ``[B, 384, 64, 64]``; the embedding is their
concatenation ``h = [F_s(x), F_p(x)]`` on SAM's grid.

``decode`` (trained): the new neck ``R`` (Conv1×1 ``C_in → 256`` → LN2d → Conv3×3 → LN2d, no
bias, no activation), then SAM's prompt path with no manual prompt (the prompt encoder's
"no mask" dense embedding and positional encoding) and SAM's two-way mask decoder whose mask
tokens are replaced by one trainable **class-prompt token** per class: token ``i`` yields the
logits of class ``i`` and its IoU prediction.

Switches (README "Switches"):

* ``encoders``: ``both`` (paper), ``sam`` ("without F_p": SAM's own frozen neck, no ``R``),
  ``hipt`` ("without F_s": ``R`` on HIPT features only);
* ``extra_token``: the official code keeps SAM's first mask token in front of the class
  tokens; it attends but its output is dropped (``k + 1`` tokens).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

from pathseg_core.contracts import Features, Prediction, Prompts
from pathseg_core.models.sam import (
    SamConfig,
    SamSegmenter,
    build_mask_decoder,
    build_sam,
    resolve_config,
    tensor_digest,
    vit_features,
)
from pathseg_sampath.hipt import HIPT_CONFIGS, HiptConfig, HiptViT, load_hipt_checkpoint

__all__ = [
    "Encoders",
    "SamPathConfigError",
    "SamPathSegmenter",
    "build_neck",
    "class_prompt_decoder",
]

Encoders = Literal["both", "sam", "hipt"]


class SamPathConfigError(ValueError):
    """SAM-Path constants that do not fit together (grids, class counts, encoder choice)."""


def build_neck(in_chans: int, out_chans: int = 256) -> nn.Sequential:
    """SAM-Path's neck ``R``: Conv1×1 (no bias) → LayerNorm2d → Conv3×3 pad 1 (no bias) → LayerNorm2d.

    Parameters: ``in·out + 2·out + 9·out² + 2·out`` (``in = 1152, out = 256``: 885,760).
    """
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False),
        LayerNorm2d(out_chans),
        nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_chans),
    )


def class_prompt_decoder(cfg: SamConfig, num_tokens: int, source: MaskDecoder | None = None) -> MaskDecoder:
    """SAM's mask decoder with ``num_tokens`` mask tokens (one per class prompt).

    Built as a ``MaskDecoder`` with ``num_multimask_outputs = num_tokens - 1`` so that it owns
    ``num_tokens`` mask-token embeddings, hypernetwork MLPs and IoU outputs. With ``source`` (a
    pretrained SAM decoder) its two-way transformer, IoU token, upscaling and IoU-head hidden
    layers are copied, every hypernetwork MLP starts as a copy of ``source``'s first one, and the
    class tokens and the IoU head's last layer start fresh (as the official code does).
    """
    if num_tokens < 1:
        raise SamPathConfigError(f"class_prompt_decoder needs at least one token, got {num_tokens}")
    decoder = build_mask_decoder(dataclasses.replace(cfg, num_multimask_outputs=num_tokens - 1))
    if source is None:
        return decoder
    own = decoder.state_dict()
    last = f"iou_prediction_head.layers.{len(decoder.iou_prediction_head.layers) - 1}."
    copied: dict[str, Tensor] = {}
    for key, value in source.state_dict().items():
        if key.startswith(("mask_tokens.", last)):
            continue
        if key.startswith("output_hypernetworks_mlps."):
            _, idx, rest = key.split(".", 2)
            if idx == "0":
                for i in range(num_tokens):
                    copied[f"output_hypernetworks_mlps.{i}.{rest}"] = value.clone()
            continue
        copied[key] = value
    unexpected = sorted(set(copied) - set(own))
    if unexpected:
        raise SamPathConfigError(f"pretrained decoder keys {unexpected[:3]} do not fit the class-prompt decoder")
    decoder.load_state_dict(copied, strict=False)
    return decoder


class SamPathSegmenter(SamSegmenter):
    """SAM-Path: frozen SAM + HIPT encoders, trainable neck, class-prompt mask decoder.

    Preprocessing is SAM's (longest side to ``image_size``, normalise, pad bottom/right); HIPT
    sees the same resized, padded image re-normalised to its own statistics (the official code's
    ``re_norm``), so both token grids cover the same pixels.

    Args:
        image_encoder: SAM's ViT (its neck is used only with ``encoders="sam"``).
        prompt_encoder: SAM prompt encoder (only its no-prompt embeddings and dense PE are used).
        mask_decoder: a :func:`class_prompt_decoder` with ``num_classes + extra_token`` tokens.
        hipt: HIPT ViT, or None with ``encoders="sam"``.
        num_classes: output channels ``k`` (one class token each).
        encoders: which frozen encoders feed the decoder (module docstring).
        extra_token: prepend one token whose output is dropped (official code).
        pixel_mean: SAM RGB mean in ``[0, 255]``.
        pixel_std: SAM RGB std in ``[0, 255]``.
        name: config name for :meth:`encoder_signature`.
    """

    semantic = True

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        hipt: HiptViT | None,
        num_classes: int,
        *,
        encoders: Encoders = "both",
        extra_token: bool = False,
        pixel_mean: tuple[float, ...] = SamConfig.pixel_mean,
        pixel_std: tuple[float, ...] = SamConfig.pixel_std,
        name: str = "sampath",
    ) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, pixel_mean, pixel_std, name=name)
        if encoders not in ("both", "sam", "hipt"):
            raise SamPathConfigError(f"encoders must be 'both', 'sam' or 'hipt', got {encoders!r}")
        n_tokens = num_classes + int(extra_token)
        if mask_decoder.num_mask_tokens != n_tokens:
            raise SamPathConfigError(
                f"the mask decoder has {mask_decoder.num_mask_tokens} class tokens but num_classes={num_classes}"
                f"{' + 1 extra token' if extra_token else ''} needs {n_tokens}; build it with class_prompt_decoder"
            )
        self.num_classes = num_classes
        self.encoders = encoders
        self.extra_token = extra_token
        grid = self.prompt_encoder.image_embedding_size[0]
        if encoders != "sam":
            if hipt is None:
                raise SamPathConfigError(f"encoders={encoders!r} needs a HIPT encoder; got None")
            p = hipt.cfg.patch_size
            if self.image_size % p or self.image_size // p != grid:
                raise SamPathConfigError(
                    f"HIPT patch {p} on {self.image_size}² input gives a {self.image_size / p:g} grid, not SAM's "
                    f"{grid}x{grid}; use an encoder input size that is a multiple of {p} with {p * grid} = image size"
                )
        self.hipt = hipt if encoders != "sam" else None
        width = self.prompt_encoder.embed_dim
        sam_dim = int(image_encoder.patch_embed.proj.out_channels)
        in_chans = {"both": sam_dim + (hipt.embed_dim if hipt else 0), "hipt": hipt.embed_dim if hipt else 0}
        self.neck = build_neck(in_chans[encoders], width) if encoders != "sam" else nn.Identity()

    # ------------------------------------------------------------------ builders
    @classmethod
    def build(
        cls,
        num_classes: int,
        *,
        sam: str | SamConfig = "vit_b",
        sam_checkpoint: str | Path | None = None,
        hipt: str | HiptConfig = "vit_s16",
        hipt_checkpoint: str | Path | None = None,
        encoders: Encoders = "both",
        extra_token: bool = False,
        **sam_overrides: object,
    ) -> SamPathSegmenter:
        """Build from registered configs, loading official checkpoints when given.

        Args:
            num_classes: ``k`` output channels.
            sam: SAM config name or config (``vit_b`` in the paper).
            sam_checkpoint: official SAM checkpoint (``sam_vit_b_01ec64.pth``).
            hipt: HIPT config name or config (``vit_s16``).
            hipt_checkpoint: official ``vit256_small_dino.pth``.
            encoders: ``both`` / ``sam`` / ``hipt``.
            extra_token: ``k + 1`` tokens (official code).
            **sam_overrides: :class:`~pathseg_core.models.sam.SamConfig` fields to replace.
        """
        if num_classes < 1:
            raise SamPathConfigError(f"num_classes must be >= 1, got {num_classes}")
        cfg = resolve_config(sam, **sam_overrides)
        base = build_sam(cfg, sam_checkpoint)
        source = base.mask_decoder if sam_checkpoint is not None else None
        decoder = class_prompt_decoder(cfg, num_classes + int(extra_token), source)
        hipt_model = None
        if encoders != "sam":
            hcfg = hipt if isinstance(hipt, HiptConfig) else HIPT_CONFIGS.get(hipt)
            if hcfg is None:
                raise SamPathConfigError(f"unknown HIPT config {hipt!r}; choose one of {', '.join(HIPT_CONFIGS)}")
            hipt_model = HiptViT(hcfg)
            if hipt_checkpoint is not None:
                load_hipt_checkpoint(hipt_model, hipt_checkpoint)
        return cls(
            base.image_encoder,
            base.prompt_encoder,
            decoder,
            hipt_model,
            num_classes,
            encoders=encoders,
            extra_token=extra_token,
            pixel_mean=cfg.pixel_mean,
            pixel_std=cfg.pixel_std,
            name=cfg.name,
        )

    # ------------------------------------------------------------------ encode
    def encoder_is_trainable(self) -> bool:
        """Whether any SAM or HIPT parameter trains (never, in SAM-Path)."""
        parts = [self.image_encoder] + ([self.hipt] if self.hipt is not None else [])
        return any(p.requires_grad for part in parts for p in part.parameters())

    def encoder_features(self, x: Tensor) -> Features:
        """Frozen features of SAM-normalised ``x [B, 3, S, S]``.

        Returns:
            ``"embedding"``: ``[B, C, g, g]`` with ``C = 768 + 384`` (``both``), ``384``
            (``hipt``) or SAM's neck output ``256`` (``sam``); ``g = S / 16``.
        """
        out: Features = {}
        parts: list[Tensor] = []
        if self.encoders == "sam":
            return {"embedding": vit_features(self.image_encoder, x)["embedding"]}
        if self.encoders == "both":
            late = vit_features(self.image_encoder, x, neck=False)["late"]
            parts.append(late.permute(0, 3, 1, 2))
        rgb = x * self.pixel_std + self.pixel_mean
        parts.append(self.hipt(self.hipt.normalize(rgb)))
        out["embedding"] = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return out

    # ------------------------------------------------------------------ decode
    def class_tokens_forward(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        """All tokens through the neck and the two-way decoder, batched.

        Args:
            embedding: ``[B, C, g, g]`` from :meth:`encoder_features`.

        Returns:
            ``(logits [B, T, 4g, 4g], iou [B, T])`` for the ``T`` mask tokens (extra token included).
        """
        dec = self.mask_decoder
        src = self.neck(embedding)
        b, c, h, w = src.shape
        _, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
        pos = self.prompt_encoder.get_dense_pe().expand(b, -1, -1, -1)
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = tokens[None].expand(b, -1, -1)
        hs, src = dec.transformer(src + dense, pos, tokens)
        iou_out, mask_out = hs[:, 0], hs[:, 1 : 1 + dec.num_mask_tokens]
        up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        logits = (hyper @ up.flatten(2)).reshape(b, -1, *up.shape[-2:])
        return logits, dec.iou_prediction_head(iou_out)

    def decode(self, features: Features, prompts: Prompts | None = None) -> Prediction:
        """Per-class logits; ``prompts`` are not used (the class tokens are the prompts).

        Returns:
            ``Prediction(mask_logits [B, k, h', w'], iou_pred [B, k])``: low-resolution logits
            (``4g`` per side for a square input) cropped to the un-padded image extent.
        """
        logits, iou = self.class_tokens_forward(features["embedding"])
        if self.extra_token:
            logits, iou = logits[:, 1:], iou[:, 1:]
        crop_h, crop_w = self.low_res_crop(*self._input_hw(features))
        return Prediction(logits[..., :crop_h, :crop_w], iou)

    def encoder_signature(self) -> str:
        """``sampath:<encoders>:<sam name>:<size>:<digest of SAM + HIPT weights>``."""
        parts = nn.ModuleList([self.image_encoder] + ([self.hipt] if self.hipt is not None else []))
        digest = tensor_digest(parts, (self.pixel_mean, self.pixel_std))
        return f"sampath:{self.encoders}:{self.name}:{self.image_size}:{digest}"
