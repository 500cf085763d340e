"""WSI-SAM as a :class:`~pathseg_core.contracts.PromptableSegmenter` (torch only, no Lightning).

Liu et al., "WSI-SAM: Multi-resolution Segment Anything Model (SAM) for histopathology
whole-slide images", 2024. The frozen SAM (ViT-B/L/H or MobileSAM's TinyViT) encodes a
high-resolution (HR) patch and the concentric low-resolution (LR) patch (same pixel size,
``context_factor`` × the field of view). Two decoder branches, one per resolution, run SAM's
frozen mask decoder with one extra learned token each (HQ-SAM style) and fuse SAM's upscaled
mask features with the encoder's early and final features. The two updated tokens, mapped
to ``C/8`` by their MLPs, are aggregated (:class:`TokenAggregator`); the aggregate · HR fused
features is the HR mask, the aggregate · LR fused features the LR mask.

Shapes for a 1024 input and SAM's ``C = 256``: embedding ``[B, 256, 64, 64]``, early
features ``[B, 64, 64, d]`` (``d`` = 768 / 1024 / 1280 for ViT-B / L / H, 160 for TinyViT),
fused features and masks ``[.., 32 | 1, 256, 256]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import Tensor, nn

from pathseg_core.contracts import Features, Prediction, PromptError, Prompts
from pathseg_core.models.sam import SamConfig, SamSegmenter, build_sam, resolve_config
from pathseg_core.models.tinyvit import MOBILE_SAM_CONFIGS, TINYVIT_CONFIGS, TinyViT, build_mobile_sam
from pathseg_wsisam.geometry import ContextError, check_points_inside, map_prompts

Aggregation = Literal["avg", "sum", "max", "concat_fc"]
AGGREGATIONS: tuple[str, ...] = ("avg", "sum", "max", "concat_fc")
Backbone = Literal["tiny", "tinyvit_tiny", "tinyvit", "vit_b", "vit_l", "vit_h"]
#: Backbone name → (builder kind, config name). ``tiny`` / ``tinyvit_tiny`` are CPU test sizes.
BACKBONES: dict[str, tuple[str, str]] = {
    "tiny": ("sam", "tiny"),
    "tinyvit_tiny": ("mobile_sam", "tiny"),
    "tinyvit": ("mobile_sam", "vit_t"),
    "vit_b": ("sam", "vit_b"),
    "vit_l": ("sam", "vit_l"),
    "vit_h": ("sam", "vit_h"),
}


class WSISamConfigError(ValueError):
    """An unknown backbone / aggregation name or inconsistent WSI-SAM sizes."""


class FusionBranch(nn.Module):
    """The trainable part of one resolution's decoder (HQ-SAM's additions to SAM's decoder).

    Args:
        dim: SAM transformer width ``C`` (256).
        early_dim: channels ``d`` of the encoder's early feature map.

    Parts (names as in the official ``network.py``): ``token`` ``Embedding(1, C)``;
    ``token_mlp`` ``C → C → C → C/8``; ``compress_vit_feat`` ConvT(d→C, 2, 2) → LN2d → GELU →
    ConvT(C→C/8, 2, 2); ``embedding_encoder`` ConvT(C→C/4) → LN2d → GELU → ConvT(C/4→C/8);
    ``embedding_maskfeature`` Conv3×3(C/8→C/4) → LN2d → GELU → Conv3×3(C/4→C/8).
    """

    def __init__(self, dim: int, early_dim: int) -> None:
        super().__init__()
        if dim % 8:
            raise WSISamConfigError(f"FusionBranch dim {dim} must be a multiple of 8")
        self.token = nn.Embedding(1, dim)
        self.token_mlp = MLP(dim, dim, dim // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(early_dim, dim, kernel_size=2, stride=2),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )

    def image_features(self, embedding: Tensor, early: Tensor) -> Tensor:
        """``[B, C, e, e]`` final + ``[B, e, e, d]`` early encoder features → ``[B, C/8, 4e, 4e]``."""
        return self.embedding_encoder(embedding) + self.compress_vit_feat(early.permute(0, 3, 1, 2))


class TokenAggregator(nn.Module):
    """Merge the HR and LR branches' ``[M, C/8]`` token vectors (Table 3a of the paper).

    Args:
        mode: ``avg`` (paper), ``sum`` (official code), ``max`` (element-wise) or
            ``concat_fc`` (``Linear(2·C/8 → C/8)`` on the concatenation).
        dim: ``C/8``.
    """

    def __init__(self, mode: str, dim: int) -> None:
        super().__init__()
        if mode not in AGGREGATIONS:
            raise WSISamConfigError(
                f"unknown aggregation {mode!r} (--model.aggregation); choose one of {', '.join(AGGREGATIONS)}"
            )
        self.mode = mode
        self.fc = nn.Linear(2 * dim, dim) if mode == "concat_fc" else None

    def forward(self, hr: Tensor, lr: Tensor) -> Tensor:
        """``[M, C/8]`` each → ``[M, C/8]``."""
        if self.mode == "avg":
            return (hr + lr) / 2
        if self.mode == "sum":
            return hr + lr
        if self.mode == "max":
            return torch.maximum(hr, lr)
        return self.fc(torch.cat([hr, lr], dim=-1))  # type: ignore[misc]


def run_branch(
    decoder: MaskDecoder,
    branch: FusionBranch,
    embedding: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    fused_image: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's ``M`` prompts through SAM's decoder with the branch's extra token.

    Args:
        decoder: SAM's (frozen) mask decoder.
        branch: this resolution's trainable parts.
        embedding: ``[1, C, e, e]`` image embedding.
        image_pe: ``[1, C, e, e]`` dense positional encoding.
        sparse: ``[M, T, C]`` prompt tokens.
        dense: ``[M, C, e, e]`` dense prompt embeddings.
        fused_image: ``[1, C/8, 4e, 4e]`` :meth:`FusionBranch.image_features` of this image.

    Returns:
        ``(vector [M, C/8], fused mask features [M, C/8, 4e, 4e], SAM token-0 logits
        [M, 4e, 4e], SAM IoU prediction of token 0 [M])``.
    """
    m = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight, branch.token.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(m, -1, -1), sparse], dim=1)
    src = embedding.expand(m, -1, -1, -1) + dense
    pos = image_pe.expand(m, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # [M, C/8, 4e, 4e]
    fused = branch.embedding_maskfeature(upscaled) + fused_image
    vector = branch.token_mlp(hs[:, 1 + decoder.num_mask_tokens])
    sam_vector = decoder.output_hypernetworks_mlps[0](hs[:, 1])
    sam_logits = torch.einsum("mc,mchw->mhw", sam_vector, upscaled)
    iou = decoder.iou_prediction_head(hs[:, 0])[:, 0]
    return vector, fused, sam_logits, iou


def early_dim(encoder: nn.Module) -> int:
    """Channels of the early feature map: the ViT width, or TinyViT's third-stage width (160)."""
    if isinstance(encoder, ImageEncoderViT):
        return int(encoder.patch_embed.proj.out_channels)
    if isinstance(encoder, TinyViT):
        return int(encoder.embed_dims[2])
    raise WSISamConfigError(f"WSI-SAM needs a SAM ViT or TinyViT encoder, got {type(encoder).__name__}")


class WSISamSegmenter(SamSegmenter):
    """WSI-SAM: frozen SAM + two fusion branches + token aggregation.

    ``encode(images, context)`` runs the frozen encoder once on the HR batch and the LR batch
    together; ``decode(features, prompts)`` returns the HR mask logits, with the LR mask in
    ``extras["context_logits"]``.

    Args:
        image_encoder: SAM ViT or TinyViT (frozen here).
        prompt_encoder: SAM prompt encoder (frozen).
        mask_decoder: SAM mask decoder (frozen; shared by both branches: the official code
            holds two copies of the same frozen weights, which computes the same).
        pixel_mean: RGB mean in ``[0, 255]`` units.
        pixel_std: RGB standard deviation in ``[0, 255]`` units.
        aggregation: see :class:`TokenAggregator`.
        add_sam_logits: in eval mode add the frozen decoder's token-0 logits to the HR
            logits (official ``inference.py``; not in the paper).
        context_factor: LR field of view / HR field of view.
        floor_context_boxes: in eval mode floor the mapped LR boxes (official ``box // 2 + 256``).
        name: backbone name (part of :meth:`encoder_signature`).
    """

    needs_context = True

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = SamConfig.pixel_mean,
        pixel_std: Sequence[float] = SamConfig.pixel_std,
        *,
        aggregation: str = "avg",
        add_sam_logits: bool = False,
        context_factor: float = 2.0,
        floor_context_boxes: bool = False,
        name: str = "wsisam",
    ) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, pixel_mean, pixel_std, name=name)
        if context_factor < 1.0:
            raise WSISamConfigError(f"context_factor {context_factor} must be >= 1 (LR covers the HR field of view)")
        for part in (self.image_encoder, self.prompt_encoder, self.mask_decoder):
            part.requires_grad_(False)
        dim = int(prompt_encoder.embed_dim)
        self.hr_branch = FusionBranch(dim, early_dim(image_encoder))
        self.lr_branch = FusionBranch(dim, early_dim(image_encoder))
        self.aggregator = TokenAggregator(aggregation, dim // 8)
        self.add_sam_logits = add_sam_logits
        self.context_factor = float(context_factor)
        self.floor_context_boxes = floor_context_boxes
        self.image_encoder.eval()

    def train(self, mode: bool = True) -> WSISamSegmenter:
        """Set the mode; the frozen encoder stays in eval mode (TinyViT's BatchNorm keeps its statistics)."""
        super().train(mode)
        self.image_encoder.eval()
        return self

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:
        """Features of HR ``images`` and LR ``context`` (both ``[B, 3, H, W]`` in ``[0, 255]``).

        Returns ``"embedding"`` / ``"early"`` (HR), ``"context_embedding"`` /
        ``"context_early"`` (LR) and ``"input_hw"`` ``[B, 2]``.

        Raises:
            ContextError: ``context`` is missing or not the HR patch's pixel size.
        """
        if context is None:
            raise ContextError(
                "WSI-SAM needs the concentric low-resolution patch (context); use sampling: concentric "
                "in the datamodule or pass context= of the HR patch's size"
            )
        if tuple(context.shape) != tuple(images.shape):
            raise ContextError(
                f"context patch {list(context.shape)} must match the HR patch {list(images.shape)}: same pixel "
                f"size, {self.context_factor:g}x the field of view"
            )
        b = images.shape[0]
        both = super().encode(torch.cat([images, context]))
        features = {"embedding": both["embedding"][:b], "early": both["early"][:b]}
        features["context_embedding"] = both["embedding"][b:]
        features["context_early"] = both["early"][b:]
        features["input_hw"] = both["input_hw"][:b]
        return features

    def context_prompts(self, prompts: Prompts, in_hw: tuple[int, int]) -> Prompts:
        """The LR branch's prompts: given (:class:`DualPrompts`) or mapped from the HR ones."""
        given = getattr(prompts, "context", None)
        if given is not None:
            return given
        floor = self.floor_context_boxes and not self.training
        return map_prompts(prompts, in_hw, self.context_factor, floor_boxes=floor, mask_fill=self.mask_pad_value)

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:
        """HR mask logits for ``N`` prompts per image (prompts in the HR patch's pixel frame).

        Returns:
            ``Prediction(mask_logits [B, N, h, w], iou_pred [B, N], extras)`` with
            ``extras["context_logits"]`` ``[B, N, h, w]`` (LR mask over the LR patch) and
            ``extras["sam_logits"]`` ``[B, N, h, w]`` (frozen SAM token 0 on the HR patch).
        """
        if prompts is None:
            raise PromptError("WSI-SAM decode needs prompts (boxes, points or masks); got None")
        if "context_embedding" not in features:
            raise ContextError("features lack the LR branch ('context_embedding'); encode with context=")
        embedding = features["embedding"]
        b = int(embedding.shape[0])
        in_hw = self._input_hw(features)
        prompts.validate(b, in_hw)
        check_points_inside(prompts, in_hw, "HR patch")
        lr_prompts = self.context_prompts(prompts, in_hw)
        lr_prompts.validate(b, in_hw)
        check_points_inside(lr_prompts, in_hw, "LR patch")
        if lr_prompts.shape != prompts.shape:
            raise PromptError(f"LR prompts cover {lr_prompts.shape} (B, N) but HR prompts {prompts.shape}")
        n = prompts.shape[1]
        crop_h, crop_w = self.low_res_crop(*in_hw)
        if n == 0:
            empty = embedding.new_zeros(b, 0, crop_h, crop_w)
            return Prediction(empty, embedding.new_zeros(b, 0), {"context_logits": empty, "sam_logits": empty})

        image_pe = self.prompt_encoder.get_dense_pe()
        hr_sparse, hr_dense = self.embed_prompts(prompts, in_hw)
        lr_sparse, lr_dense = self.embed_prompts(lr_prompts, in_hw)
        hr_image = self.hr_branch.image_features(embedding, features["early"])
        lr_image = self.lr_branch.image_features(features["context_embedding"], features["context_early"])
        hr_out, lr_out, sam_out, ious = [], [], [], []
        for i in range(b):
            rows = slice(i * n, (i + 1) * n)
            v_hr, f_hr, sam, iou = run_branch(
                self.mask_decoder,
                self.hr_branch,
                embedding[i : i + 1],
                image_pe,
                hr_sparse[rows],
                hr_dense[rows],
                hr_image[i : i + 1],
            )
            v_lr, f_lr, _, _ = run_branch(
                self.mask_decoder,
                self.lr_branch,
                features["context_embedding"][i : i + 1],
                image_pe,
                lr_sparse[rows],
                lr_dense[rows],
                lr_image[i : i + 1],
            )
            token = self.aggregator(v_hr, v_lr)
            hr_out.append(torch.einsum("mc,mchw->mhw", token, f_hr))
            lr_out.append(torch.einsum("mc,mchw->mhw", token, f_lr))
            sam_out.append(sam)
            ious.append(iou)
        hr_logits = torch.stack(hr_out)[..., :crop_h, :crop_w]
        lr_logits = torch.stack(lr_out)[..., :crop_h, :crop_w]
        sam_logits = torch.stack(sam_out)[..., :crop_h, :crop_w]
        if self.add_sam_logits and not self.training:
            hr_logits = hr_logits + sam_logits
        return Prediction(hr_logits, torch.stack(ious), {"context_logits": lr_logits, "sam_logits": sam_logits})

    def encoder_signature(self) -> str:
        """``wsisam:<base signature>:f<context_factor>``: the encoder output also depends on the LR geometry."""
        return f"wsisam:{super().encoder_signature()}:f{self.context_factor:g}"


def build_base_sam(backbone: str, checkpoint: str | Path | None = None, image_size: int | None = None) -> Sam:
    """SAM (or MobileSAM) for a :data:`BACKBONES` name, loading official weights by path."""
    if backbone not in BACKBONES:
        raise WSISamConfigError(
            f"unknown backbone {backbone!r} (--model.backbone); choose one of {', '.join(BACKBONES)}"
        )
    kind, config = BACKBONES[backbone]
    if kind == "sam":
        overrides = {} if image_size is None else {"image_size": image_size}
        return build_sam(resolve_config(config, **overrides), checkpoint)
    size = image_size if image_size is not None else (64 if config == "tiny" else 1024)
    return build_mobile_sam(checkpoint, image_size=size, config=config)


def build_wsisam(
    backbone: str = "tinyvit",
    checkpoint: str | Path | None = None,
    *,
    image_size: int | None = None,
    aggregation: str = "avg",
    add_sam_logits: bool = False,
    context_factor: float = 2.0,
    floor_context_boxes: bool = False,
) -> WSISamSegmenter:
    """Build WSI-SAM on a backbone; SAM's parts are frozen, the two branches (and ``concat_fc``) train.

    Args:
        backbone: a :data:`BACKBONES` name.
        checkpoint: official SAM / MobileSAM weights (``sam_vit_b_01ec64.pth``, ``mobile_sam.pt``).
        image_size: encoder input side (default: the backbone's).
        aggregation: token aggregation, see :class:`TokenAggregator`.
        add_sam_logits: see :class:`WSISamSegmenter`.
        context_factor: LR field of view / HR field of view.
        floor_context_boxes: see :class:`WSISamSegmenter`.
    """
    if aggregation not in AGGREGATIONS:
        raise WSISamConfigError(
            f"unknown aggregation {aggregation!r} (--model.aggregation); choose one of {', '.join(AGGREGATIONS)}"
        )
    sam = build_base_sam(backbone, checkpoint, image_size)
    return WSISamSegmenter.from_sam(
        sam,
        aggregation=aggregation,
        add_sam_logits=add_sam_logits,
        context_factor=context_factor,
        floor_context_boxes=floor_context_boxes,
        name=backbone,
    )


def branch_parameter_count(dim: int, early_channels: int) -> int:
    """Closed form of one :class:`FusionBranch`'s parameters: ``1024·d + 284672`` at ``C = 256``.

    ``C`` (token) + ``2(C² + C) + C·C/8 + C/8`` (MLP) + ``4dC + C + 2C + 4C·C/8 + C/8``
    (compress_vit_feat) + ``4C·C/4 + C/4 + 2C/4 + 4(C/4)(C/8) + C/8`` (embedding_encoder) +
    ``9(C/8)(C/4) + C/4 + 2C/4 + 9(C/4)(C/8) + C/8`` (embedding_maskfeature).
    """
    c, q, e = dim, dim // 4, dim // 8
    token = c
    mlp = 2 * (c * c + c) + c * e + e
    compress = 4 * early_channels * c + c + 2 * c + 4 * c * e + e
    encoder = 4 * c * q + q + 2 * q + 4 * q * e + e
    maskfeature = 9 * e * q + q + 2 * q + 9 * q * e + e
    return token + mlp + compress + encoder + maskfeature


#: Early-feature channels per full-size backbone (official ``network.py`` ``vit_dim_dict``).
EARLY_DIMS: dict[str, int] = {
    "tinyvit": TINYVIT_CONFIGS["5m"]["embed_dims"][2],
    "vit_b": 768,
    "vit_l": 1024,
    "vit_h": 1280,
}
#: SAM's decoder width for every full-size backbone (MobileSAM keeps it).
DECODER_DIM: int = MOBILE_SAM_CONFIGS["vit_t"]["prompt_embed_dim"]
