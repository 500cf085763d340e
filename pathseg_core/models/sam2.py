"""SAM2 (hiera) models built from the ``sam2`` package's modules, and their segmenter.

:func:`build_sam2` assembles the full ``SAM2Base`` (image encoder, memory attention,
memory encoder, SAM prompt encoder and mask decoder) directly from the ``sam2`` module
classes, without hydra or YAML at run time, so official ``sam2.1_hiera_*.pt`` checkpoints
(``{"model": state_dict}``) load key for key. The constants of :data:`SAM2_CONFIGS` are
those of the SAM2.1 YAML files shipped in the package (``sam2/configs/sam2.1/``); the
memory modules are built (checkpoints carry them) but single-image segmentation does not
run them.

:class:`Sam2Segmenter` is the pathseg :class:`~pathseg_core.contracts.PromptableSegmenter`
over a ``SAM2Base``, following ``SAM2ImagePredictor``: images are resized (stretched) to
``image_size`` x ``image_size`` and normalised with ImageNet statistics; the lowest-resolution
feature map gets ``no_mem_embed`` added; boxes enter the prompt encoder as two corner
points (labels 2, 3) ahead of the clicks; the decoder uses the two high-resolution FPN levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_base import SAM2Base
from torch import Tensor, nn

from pathseg_core.contracts import Features, Prediction, PromptableSegmenter, PromptError, Prompts
from pathseg_core.models.checkpoint import load_into, load_state_dict, map_keys
from pathseg_core.models.sam import tensor_digest


class Sam2ConfigError(ValueError):
    """A SAM2 configuration name or override that does not exist or does not fit."""


@dataclass(frozen=True)
class Sam2Config:
    """Every constant of a SAM2.1 model; defaults are ``sam2.1_hiera_t.yaml``.

    Trunk (``Hiera``): ``embed_dim`` … ``drop_path_rate``. Neck (``FpnNeck``): ``d_model``
    (also the SAM heads' width), ``fpn_*``, ``scalp`` (coarsest levels dropped).
    Memory attention: ``mem_attn_*``, ``rope_theta``. Memory encoder: ``mem_dim``,
    ``mask_downsampler_*``, ``fuser_*``. The rest are ``SAM2Base`` arguments of the same name.
    ``dynamic_multimask_*`` are ``build_sam2``'s post-processing defaults for the mask
    decoder (they only change eval-mode single-mask output).
    """

    # Hiera trunk
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    drop_path_rate: float = 0.0
    # FPN neck
    d_model: int = 256
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    scalp: int = 1
    pos_temperature: int = 10000
    # memory attention
    mem_attn_layers: int = 4
    mem_attn_dim_feedforward: int = 2048
    mem_attn_dropout: float = 0.1
    mem_attn_num_heads: int = 1
    mem_attn_activation: str = "relu"
    rope_theta: float = 10000.0
    # memory encoder
    mem_dim: int = 64
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    fuser_layers: int = 2
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    fuser_layer_scale_init_value: float = 1e-6
    # SAM2Base
    image_size: int = 1024
    backbone_stride: int = 16
    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    use_mask_input_as_output_without_sam: bool = True
    directly_add_no_mem_embed: bool = True
    no_obj_embed_spatial: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    iou_prediction_use_sigmoid: bool = True
    use_obj_ptrs_in_encoder: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    use_mlp_for_obj_ptr_proj: bool = True
    # mask decoder post-processing (build_sam2 apply_postprocessing=True)
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @property
    def backbone_channel_list(self) -> list[int]:
        """Trunk output channels, coarsest first (``[768, 384, 192, 96]`` for ``t``)."""
        return [int(self.embed_dim * self.dim_mul**i) for i in reversed(range(len(self.stages)))]

    @property
    def feat_size(self) -> int:
        """Side of the image embedding (``image_size / backbone_stride``: 64)."""
        return self.image_size // self.backbone_stride


#: Named configurations: the four SAM2.1 sizes (constants from ``sam2/configs/sam2.1/*.yaml``)
#: and ``tiny``, a seconds-on-CPU test size at 128 px.
SAM2_CONFIGS: dict[str, Sam2Config] = {
    "t": Sam2Config(),
    "s": Sam2Config(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "b+": Sam2Config(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "l": Sam2Config(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8),
    ),
    "tiny": Sam2Config(
        embed_dim=8,
        num_heads=1,
        stages=(1, 1, 2, 1),
        global_att_blocks=(3,),
        window_pos_embed_bkg_spatial_size=(4, 4),
        window_spec=(4, 2, 2, 1),
        d_model=32,
        mem_attn_layers=1,
        mem_attn_dim_feedforward=32,
        mem_dim=16,
        fuser_layers=1,
        image_size=128,
    ),
}

#: Checkpoint key rules (``map_keys`` format) for official SAM2 / SAM2.1 checkpoints: every
#: top-level part of ``SAM2Base`` keeps its name.
SAM2_KEY_RULES: tuple[tuple[str, str], ...] = tuple(
    (p, p)
    for p in (
        "image_encoder.trunk.",
        "image_encoder.neck.",
        "memory_attention.",
        "memory_encoder.",
        "sam_prompt_encoder.",
        "sam_mask_decoder.",
        "obj_ptr_proj.",
        "obj_ptr_tpos_proj.",
        "mask_downsample.",
        "maskmem_tpos_enc",
        "no_mem_embed",
        "no_mem_pos_enc",
        "no_obj_ptr",
        "no_obj_embed_spatial",
    )
)

#: ImageNet RGB statistics on the 0..255 scale (``SAM2Transforms`` uses them on 0..1).
IMAGENET_MEAN_255: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD_255: tuple[float, float, float] = (58.395, 57.12, 57.375)


def sam2_config(name: str = "t", **overrides: Any) -> Sam2Config:
    """The named :data:`SAM2_CONFIGS` entry with ``overrides`` applied (field names of :class:`Sam2Config`)."""
    if name not in SAM2_CONFIGS:
        raise Sam2ConfigError(f"unknown SAM2 config {name!r}: choose one of {sorted(SAM2_CONFIGS)}")
    known = {f.name for f in fields(Sam2Config)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise Sam2ConfigError(f"unknown Sam2Config fields {bad}: see pathseg_core.models.sam2.Sam2Config")
    return replace(SAM2_CONFIGS[name], **overrides)


def _image_encoder(c: Sam2Config) -> ImageEncoder:
    trunk = Hiera(
        embed_dim=c.embed_dim,
        num_heads=c.num_heads,
        drop_path_rate=c.drop_path_rate,
        q_pool=c.q_pool,
        q_stride=c.q_stride,
        stages=c.stages,
        dim_mul=c.dim_mul,
        head_mul=c.head_mul,
        window_pos_embed_bkg_spatial_size=c.window_pos_embed_bkg_spatial_size,
        window_spec=c.window_spec,
        global_att_blocks=c.global_att_blocks,
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=c.d_model, normalize=True, temperature=c.pos_temperature),
        d_model=c.d_model,
        backbone_channel_list=c.backbone_channel_list,
        fpn_top_down_levels=list(c.fpn_top_down_levels),
        fpn_interp_model=c.fpn_interp_model,
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=c.scalp)


def _memory_attention(c: Sam2Config) -> MemoryAttention:
    feat_sizes = (c.feat_size, c.feat_size)

    def rope(**extra: Any) -> RoPEAttention:
        return RoPEAttention(
            rope_theta=c.rope_theta,
            feat_sizes=feat_sizes,
            embedding_dim=c.d_model,
            num_heads=c.mem_attn_num_heads,
            downsample_rate=1,
            dropout=c.mem_attn_dropout,
            **extra,
        )

    layer = MemoryAttentionLayer(
        activation=c.mem_attn_activation,
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=c.mem_dim),
        d_model=c.d_model,
        dim_feedforward=c.mem_attn_dim_feedforward,
        dropout=c.mem_attn_dropout,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=rope(),
    )
    return MemoryAttention(d_model=c.d_model, pos_enc_at_input=True, layer=layer, num_layers=c.mem_attn_layers)


def _memory_encoder(c: Sam2Config) -> MemoryEncoder:
    return MemoryEncoder(
        out_dim=c.mem_dim,
        mask_downsampler=MaskDownSampler(
            embed_dim=c.d_model,
            kernel_size=c.mask_downsampler_kernel_size,
            stride=c.mask_downsampler_stride,
            padding=c.mask_downsampler_padding,
            total_stride=c.backbone_stride,
        ),
        fuser=Fuser(
            CXBlock(
                dim=c.d_model,
                kernel_size=c.fuser_kernel_size,
                padding=c.fuser_padding,
                layer_scale_init_value=c.fuser_layer_scale_init_value,
                use_dwconv=True,
            ),
            num_layers=c.fuser_layers,
        ),
        position_encoding=PositionEmbeddingSine(num_pos_feats=c.mem_dim, normalize=True, temperature=c.pos_temperature),
        in_dim=c.d_model,
    )


_BASE_FLAGS = (
    "num_maskmem",
    "image_size",
    "backbone_stride",
    "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc",
    "use_mask_input_as_output_without_sam",
    "directly_add_no_mem_embed",
    "no_obj_embed_spatial",
    "use_high_res_features_in_sam",
    "multimask_output_in_sam",
    "iou_prediction_use_sigmoid",
    "use_obj_ptrs_in_encoder",
    "add_tpos_enc_to_obj_ptrs",
    "proj_tpos_enc_in_obj_ptrs",
    "use_signed_tpos_enc_to_obj_ptrs",
    "only_obj_ptrs_in_the_past_for_eval",
    "pred_obj_scores",
    "pred_obj_scores_mlp",
    "fixed_no_obj_ptr",
    "multimask_output_for_tracking",
    "use_multimask_token_for_obj_ptr",
    "multimask_min_pt_num",
    "multimask_max_pt_num",
    "use_mlp_for_obj_ptr_proj",
)


def build_sam2(name: str = "t", checkpoint: str | Path | None = None, **overrides: Any) -> SAM2Base:
    """Build a full ``SAM2Base`` (memory modules included) from a named config.

    Args:
        name: a key of :data:`SAM2_CONFIGS` (``"t"``, ``"s"``, ``"b+"``, ``"l"``, ``"tiny"``).
        checkpoint: path of an official SAM2 / SAM2.1 checkpoint (``{"model": state_dict}``)
            or a plain state dict; ``None`` leaves random weights.
        **overrides: :class:`Sam2Config` fields to change (e.g. ``image_size=512``).

    Returns:
        The model in train mode (freezing and ``eval()`` are the caller's choice).

    Raises:
        Sam2ConfigError: unknown name or field.
        FileNotFoundError, CheckpointError: the checkpoint is absent or does not fit.
    """
    c = sam2_config(name, **overrides)
    model = SAM2Base(
        image_encoder=_image_encoder(c),
        memory_attention=_memory_attention(c),
        memory_encoder=_memory_encoder(c),
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": c.dynamic_multimask_via_stability,
            "dynamic_multimask_stability_delta": c.dynamic_multimask_stability_delta,
            "dynamic_multimask_stability_thresh": c.dynamic_multimask_stability_thresh,
        },
        **{k: getattr(c, k) for k in _BASE_FLAGS},
    )
    if checkpoint is not None:
        load_into(model, sam2_key_map(load_state_dict(checkpoint)), source=checkpoint)
    return model


def sam2_key_map(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an official SAM2 state dict onto :func:`build_sam2`'s model (:data:`SAM2_KEY_RULES`)."""
    return map_keys(sd, SAM2_KEY_RULES)


class Sam2Segmenter(PromptableSegmenter):
    """Single-image SAM2 segmentation: ``encode`` once, ``decode`` any number of prompts.

    Same conventions as :class:`~pathseg_core.models.sam.SamSegmenter`: images float RGB in
    0..255, prompts in the input image's pixel frame, low-resolution logits covering exactly
    the input extent. Unlike SAM, SAM2 stretches the image to the square (no padding), so
    no crop is needed and non-square inputs are decoded correctly per image.

    Args:
        model: a ``SAM2Base`` with ``use_high_res_features_in_sam`` (all SAM2.1 configs).
        multimask_output: decode the three candidate masks per prompt and keep the one with
            the best predicted IoU (all three go to ``Prediction.extras``); if false, the
            single-mask token (in eval mode ``dynamic_multimask_via_stability`` may swap in
            the best candidate when that token's mask is unstable, as SAM2's predictor does).
        pixel_mean: RGB mean on the 0..255 scale.
        pixel_std: RGB std on the 0..255 scale.
    """

    def __init__(
        self,
        model: SAM2Base,
        *,
        multimask_output: bool = False,
        pixel_mean: Sequence[float] = IMAGENET_MEAN_255,
        pixel_std: Sequence[float] = IMAGENET_STD_255,
    ) -> None:
        super().__init__()
        if not model.use_high_res_features_in_sam:
            raise Sam2ConfigError("Sam2Segmenter needs a SAM2Base built with use_high_res_features_in_sam=True")
        self.model = model
        self.image_size = int(model.image_size)
        self.multimask_output = multimask_output
        self.register_buffer("pixel_mean", torch.tensor(list(pixel_mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(list(pixel_std)).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(
        cls,
        name: str = "t",
        checkpoint: str | Path | None = None,
        *,
        multimask_output: bool = False,
        **overrides: Any,
    ) -> Sam2Segmenter:
        """Build from a :data:`SAM2_CONFIGS` name, ``overrides`` replacing :class:`Sam2Config` fields."""
        return cls(build_sam2(name, checkpoint, **overrides), multimask_output=multimask_output)

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in 0..255 -> ``[B, 3, S, S]`` normalised, ``S = image_size``.

        The image is stretched to the square (bilinear, antialiased), as SAM2's predictor does.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise PromptError(f"images must be [B, 3, H, W] RGB, got {list(images.shape)}")
        x = images.to(self.pixel_mean.dtype)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:
        """Encode ``[B, 3, H, W]`` RGB images in 0..255 (``context`` is ignored).

        Returns (sizes for ``image_size = 1024``):
            ``"embedding"``: ``[B, 256, 64, 64]``, stride-16 FPN level + ``no_mem_embed``;
            ``"high_res_0"``: ``[B, 32, 256, 256]``, stride-4 level after the decoder's ``conv_s0``;
            ``"high_res_1"``: ``[B, 64, 128, 128]``, stride-8 level after the decoder's ``conv_s1``;
            ``"input_hw"``: ``[B, 2]`` long, ``(H, W)`` of the input (the prompts' frame).
        """
        out = self.model.forward_image(self.preprocess(images))
        levels = out["backbone_fpn"][-self.model.num_feature_levels :]
        embedding = levels[-1]
        if self.model.directly_add_no_mem_embed:
            embedding = embedding + self.model.no_mem_embed.view(1, -1, 1, 1)
        b, _, h, w = images.shape
        hw = torch.tensor([[h, w]], dtype=torch.long, device=images.device).repeat(b, 1)
        return {"embedding": embedding, "high_res_0": levels[0], "high_res_1": levels[1], "input_hw": hw}

    def _sparse_inputs(self, prompts: Prompts, scale: Tensor) -> tuple[Tensor, Tensor] | None:
        """Boxes (two corner points, labels 2 / 3) then clicks: ``[B*N, P, 2]`` xy in model pixels, ``[B*N, P]``."""
        b, n = prompts.shape
        coords, labels = [], []
        if prompts.boxes is not None:
            coords.append(prompts.boxes.float().reshape(b, n, 2, 2) * scale)
            labels.append(torch.tensor([2, 3], device=scale.device).expand(b, n, 2))
        if prompts.points is not None:
            coords.append(prompts.points.float() * scale)
            labels.append(prompts.point_labels.long())
        if not coords:
            return None
        p = sum(c.shape[2] for c in coords)
        return torch.cat(coords, 2).reshape(b * n, p, 2), torch.cat(labels, 2).reshape(b * n, p).int()

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:
        """Mask logits for ``N`` prompts per image.

        Args:
            features: from :meth:`encode` (possibly cached).
            prompts: in the input image's pixel frame: boxes ``[B, N, 4]`` xyxy, points
                ``[B, N, P, 2]`` xy with labels ``[B, N, P]`` (1 positive, 0 negative, -1
                padding), mask prompts ``[B, N, 1, h, w]`` logits covering the whole image.

        Returns:
            ``Prediction(mask_logits [B, N, S/4, S/4], iou_pred [B, N], extras)``; the logits
            span the whole input image. ``extras``: ``"object_score_logits"`` ``[B, N]``
            (SAM2's object-presence head) and, with ``multimask_output``,
            ``"multimask_logits"`` ``[B, N, 3, S/4, S/4]`` and ``"multimask_iou"`` ``[B, N, 3]``.
        """
        if prompts is None:
            raise PromptError("Sam2Segmenter.decode needs prompts (boxes, points or masks); got None")
        emb = features["embedding"]
        b = int(emb.shape[0])
        hw = features.get("input_hw")
        if hw is None:
            raise PromptError("features lack 'input_hw' [B, 2]; produce them with Sam2Segmenter.encode")
        prompts.validate(b, (int(hw[0, 0]), int(hw[0, 1])) if bool((hw == hw[:1]).all()) else None)
        _, n = prompts.shape
        low_side = 4 * self.model.sam_image_embedding_size
        k = self.model.sam_mask_decoder.num_multimask_outputs if self.multimask_output else 1
        if n == 0:
            return self._select(emb.new_zeros(b, 0, k, low_side, low_side), emb.new_zeros(b, 0, k), emb.new_zeros(b, 0))
        scale = (self.image_size / hw.to(emb.device, torch.float32).flip(-1)).view(b, 1, 1, 2)  # (x, y) per image

        masks = None
        if prompts.masks is not None:
            masks = prompts.masks.reshape(b * n, 1, *prompts.masks.shape[-2:]).to(emb.dtype)
            size = tuple(self.model.sam_prompt_encoder.mask_input_size)
            if tuple(masks.shape[-2:]) != size:
                masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.model.sam_prompt_encoder(
            points=self._sparse_inputs(prompts, scale), boxes=None, masks=masks
        )
        # One decoder call for all B*N prompts: per-image features repeated per prompt.
        low_res, iou, _, obj = self.model.sam_mask_decoder(
            image_embeddings=emb.repeat_interleave(n, 0),
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
            repeat_image=False,
            high_res_features=[
                features["high_res_0"].repeat_interleave(n, 0),
                features["high_res_1"].repeat_interleave(n, 0),
            ],
        )
        h, w = low_res.shape[-2:]
        return self._select(low_res.reshape(b, n, -1, h, w), iou.reshape(b, n, -1), obj.reshape(b, n))

    def _select(self, logits: Tensor, iou: Tensor, obj: Tensor) -> Prediction:
        """``[B, N, K, h, w]`` / ``[B, N, K]`` -> the best of ``K`` masks per prompt by predicted IoU."""
        extras = {"object_score_logits": obj}
        if logits.shape[2] == 1:
            return Prediction(logits[:, :, 0], iou[:, :, 0], extras)
        best = iou.argmax(dim=-1, keepdim=True)  # [B, N, 1]
        chosen = logits.gather(2, best[..., None, None].expand(-1, -1, -1, *logits.shape[-2:]))
        extras.update(multimask_logits=logits, multimask_iou=iou)
        return Prediction(chosen[:, :, 0], iou.gather(2, best)[..., 0], extras)

    def _encoder_parts(self) -> tuple[nn.Module, ...]:
        decoder = self.model.sam_mask_decoder
        return self.model.image_encoder, decoder.conv_s0, decoder.conv_s1

    def encoder_is_trainable(self) -> bool:
        """Whether the hiera encoder or the decoder's ``conv_s0`` / ``conv_s1`` (run by ``encode``) train."""
        return any(p.requires_grad for part in self._encoder_parts() for p in part.parameters())

    def encoder_signature(self) -> str:
        """``sam2:<image_size>:<no_mem_embed flag>:<digest>`` for embedding caches.

        The digest covers every tensor ``encode`` uses (trunk, neck, ``conv_s0`` / ``conv_s1``,
        ``no_mem_embed``, pixel statistics), so it changes whenever encoder outputs would.
        """
        extra = (self.model.no_mem_embed, self.pixel_mean, self.pixel_std)
        digest = tensor_digest(nn.ModuleList(self._encoder_parts()), extra)
        flag = int(self.model.directly_add_no_mem_embed)
        return f"sam2:{self.image_size}:{flag}:{digest}"
