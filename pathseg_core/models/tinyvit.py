"""TinyViT image encoder, laid out so MobileSAM's ``mobile_sam.pt`` loads into it key for key.

TinyViT (Wu et al., ECCV 2022) is a hierarchical encoder: a convolutional stem (stride 4),
one stage of MBConv blocks, then stages of windowed self-attention blocks with a learned
relative-position bias, joined by convolutional patch-merging layers. MobileSAM (Zhang et
al., 2023) distilled SAM's ViT-H encoder into TinyViT-5M with two changes: the last
patch merging keeps the resolution (stride 1, so a 1024 input gives a 64 x 64 map like
SAM's ViT), and SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) maps the last
stage to 256 channels.

Tensor layout: stages pass ``[B, C, H, W]``; attention blocks work channels-last
``[B, H, W, C]`` inside. :meth:`TinyViT.forward_features` returns the ``Features`` dict the
pathseg decoders read: ``"embedding"`` ``[B, 256, 64, 64]``, ``"early"`` (output of
``layers[1]``, ``[B, 64, 64, 160]``) and ``"late"`` (last stage before the neck,
``[B, 64, 64, 320]``), sizes for a 1024 input.

State-dict names follow the MobileSAM checkpoint (``patch_embed.seq.0.c.weight``,
``layers.2.blocks.0.attn.attention_biases``, ``neck.0.weight`` …). The checkpoint also
carries TinyViT's ImageNet classifier (``norm_head``, ``head``), which MobileSAM never
runs; this module has no classifier and :func:`mobile_sam_key_map` drops those keys by
name. ``attention_bias_idxs`` is a non-persistent buffer (not in the checkpoint).

:func:`build_mobile_sam` puts the encoder into segment-anything's ``Sam`` with the standard
prompt encoder and mask decoder and loads ``mobile_sam.pt`` by path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from pathseg_core.contracts import Features
from pathseg_core.models.checkpoint import load_into, load_state_dict, map_keys

#: Constructor arguments per named TinyViT configuration. ``"5m"`` is MobileSAM's encoder
#: (``mobile_sam/build_sam.py``: ``build_sam_vit_t``); ``"tiny"`` is a seconds-on-CPU test size.
TINYVIT_CONFIGS: dict[str, dict[str, Any]] = {
    "5m": dict(
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        merge_strides=(2, 2, 1),
        mlp_ratio=4.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        neck_dim=256,
    ),
    "tiny": dict(
        embed_dims=(8, 16, 24, 32),
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 3, 4),
        window_sizes=(2, 2, 4, 2),
        merge_strides=(2, 2, 1),
        mlp_ratio=2.0,
        mbconv_expand_ratio=2.0,
        local_conv_size=3,
        neck_dim=32,
    ),
}


class TinyViTConfigError(ValueError):
    """A TinyViT configuration whose per-stage lists or sizes do not fit together."""


class ConvBN(nn.Sequential):
    """Bias-free ``Conv2d`` (``c``) followed by ``BatchNorm2d`` (``bn``); ``[B, C, H, W]`` in and out."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 ``ConvBN`` with GELU between; ``[B, 3, H, W] -> [B, D, H/4, W/4]``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W]`` -> ``[B, D, ceil(H/4), ceil(W/4)]``."""
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        # Zero-initialised last BN: the block starts as the identity.
        self.conv3 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)
        self.act = nn.GELU()
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        y = self.conv3(y)
        return self.act(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """Stage transition: 1x1 ``ConvBN``, 3x3 depthwise ``ConvBN`` (``stride``), 1x1 ``ConvBN``.

    ``[B, C, H, W] -> [B, C_out, ceil(H / stride), ceil(W / stride)]``. MobileSAM uses
    ``stride = 1`` for the last merge (into 320 channels) to keep a 64 x 64 map.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C_out, H', W']``."""
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


def window_offset_index(window_size: int) -> Tensor:
    """Relative-offset index of every pair of positions in a square window.

    Positions are numbered row-major (``p = r * window_size + c``). The pair ``(p, q)``
    gets ``|r_p - r_q| * window_size + |c_p - c_q|``: a unique id per absolute offset, in
    the order TinyViT's ``attention_biases`` columns are stored.

    Returns:
        ``[window_size**2, window_size**2]`` long tensor with values in ``[0, window_size**2)``.
    """
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dr = (rows[:, None] - rows[None, :]).abs()
    dc = (cols[:, None] - cols[None, :]).abs()
    return dr * window_size + dc


class WindowAttention(nn.Module):
    """Multi-head self-attention over one window, with a learned bias per head and offset.

    ``qkv`` packs, per head, ``[q (d), k (d), v (d)]`` with ``d = dim / num_heads`` — the
    layout of the MobileSAM weights. Input is normalised inside (``norm``).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise TinyViTConfigError(f"attention dim {dim} is not divisible by num_heads={num_heads}: fix the config")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", window_offset_index(window_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B', N, C]`` tokens of ``B'`` windows (``N = window_size**2``) -> ``[B', N, C]``."""
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # [heads, N, N]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Pre-norm MLP: ``norm``, ``fc1``, GELU, dropout, ``fc2``, dropout; last dim ``C`` in and out."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., C]`` -> ``[..., C]``."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm(x))))))


class TinyViTBlock(nn.Module):
    """Window attention + residual, depthwise ``local_conv``, MLP + residual.

    Windows are cut from the bottom/right zero-padded map (padding tokens take part in
    attention, as in the MobileSAM weights' training) and the padding is dropped after.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)
        self.drop_path = StochasticDepth(drop_path, "row")

    def _window_attention(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        windows = x.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        windows = self.attn(windows)
        x = windows.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = x + self.drop_path(self._window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))


class ConvStage(nn.Module):
    """Stage 0: MBConv ``blocks`` then an optional ``downsample``; ``[B, C, H, W]`` in and out."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C', H', W']``."""
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(ConvStage):
    """Stages 1..: TinyViT ``blocks`` (channels-last) then an optional ``downsample``."""

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C', H', W']``."""
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT encoder with SAM's neck, as MobileSAM builds it (defaults: TinyViT-5M, 1024 px).

    Args:
        img_size: square input side length (SAM's ``preprocess`` pads to it).
        in_chans: input channels.
        embed_dims: channels per stage.
        depths: blocks per stage (stage 0 is MBConv, the others attention).
        num_heads: attention heads per stage (entry 0 unused: stage 0 has no attention).
        window_sizes: attention window side per stage (entry 0 unused).
        merge_strides: stride of the patch merging after each stage but the last.
        mlp_ratio: MLP hidden width over ``dim`` in attention blocks.
        mbconv_expand_ratio: hidden width over ``dim`` in MBConv blocks.
        local_conv_size: kernel of the depthwise conv between attention and MLP.
        neck_dim: output channels of the neck (SAM's prompt embedding dim).
        drop_rate: dropout in the MLPs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        neck_dim: int = 256,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(embed_dims)
        if n < 2 or not (len(depths) == len(num_heads) == len(window_sizes) == n) or len(merge_strides) != n - 1:
            raise TinyViTConfigError(
                f"TinyViT needs >= 2 stages with depths/num_heads/window_sizes of length {n} and "
                f"merge_strides of length {n - 1}; got {len(depths)}/{len(num_heads)}/{len(window_sizes)}/{len(merge_strides)}"
            )
        self.img_size = img_size
        self.embed_dims = tuple(embed_dims)
        self.stride = 4 * math.prod(merge_strides)
        if img_size % self.stride:
            raise TinyViTConfigError(f"img_size={img_size} is not a multiple of the encoder stride {self.stride}")

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(n):
            dpr = rates[sum(depths[:i]) : sum(depths[: i + 1])]
            downsample = PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i]) if i < n - 1 else None
            if i == 0:
                blocks = [MBConv(embed_dims[0], mbconv_expand_ratio, p) for p in dpr]
                self.layers.append(ConvStage(blocks, downsample))
            else:
                blocks = [
                    TinyViTBlock(embed_dims[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size, drop_rate, p)
                    for p in dpr
                ]
                self.layers.append(AttentionStage(blocks, downsample))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )
        self.apply(_init_weights)

    @property
    def embedding_size(self) -> int:
        """Side of the output map for an ``img_size`` input (64 for MobileSAM)."""
        return self.img_size // self.stride

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Output of every stage (after its patch merging), each ``[B, C_i, H_i, W_i]``."""
        x = self.patch_embed(x)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor, early_stage: int = 1) -> Features:
        """Encode normalised ``[B, 3, img_size, img_size]`` images into pathseg ``Features``.

        Returns:
            ``"embedding"``: neck output ``[B, neck_dim, h, w]``;
            ``"early"``: output of ``layers[early_stage]`` channels-last ``[B, H_e, W_e, C_e]``
            (``[B, 64, 64, 160]`` for MobileSAM at 1024);
            ``"late"``: last stage channels-last ``[B, h, w, embed_dims[-1]]``.
        """
        stages = self.forward_stages(x)
        return {
            "embedding": self.neck(stages[-1]),
            "early": stages[early_stage].permute(0, 2, 3, 1),
            "late": stages[-1].permute(0, 2, 3, 1),
        }

    def forward(self, x: Tensor) -> Tensor:
        """Normalised ``[B, 3, img_size, img_size]`` -> embedding ``[B, neck_dim, h, w]`` (SAM's encoder API)."""
        return self.neck(self.forward_stages(x)[-1])


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_tinyvit(name: str = "5m", img_size: int = 1024, **overrides: Any) -> TinyViT:
    """Build a named TinyViT configuration (:data:`TINYVIT_CONFIGS`), any argument overridable."""
    if name not in TINYVIT_CONFIGS:
        raise TinyViTConfigError(f"unknown TinyViT config {name!r}: choose one of {sorted(TINYVIT_CONFIGS)}")
    return TinyViT(img_size=img_size, **{**TINYVIT_CONFIGS[name], **overrides})


def tinyvit_features(encoder: TinyViT, images: Tensor) -> Features:
    """Features hook for SAM-style wrappers: ``encoder.forward_features(images)``.

    Args:
        encoder: the TinyViT image encoder.
        images: normalised, padded ``[B, 3, img_size, img_size]``.
    """
    return encoder.forward_features(images)


#: ``build_mobile_sam`` arguments per named model: ``"vit_t"`` is MobileSAM (its registry
#: name), ``"tiny"`` a CPU test size (use with a small ``image_size``, e.g. 64).
MOBILE_SAM_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_t": dict(
        encoder="5m",
        prompt_embed_dim=256,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=2048,
        decoder_num_heads=8,
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    ),
    "tiny": dict(
        encoder="tiny",
        prompt_embed_dim=32,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        num_multimask_outputs=3,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    ),
}

#: Checkpoint key rules for ``mobile_sam.pt`` (``map_keys`` format): the three SAM parts
#: keep their names; TinyViT's ImageNet classifier, never run by MobileSAM, is dropped.
MOBILE_SAM_KEY_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.", "image_encoder."),
    ("prompt_encoder.", "prompt_encoder."),
    ("mask_decoder.", "mask_decoder."),
)
MOBILE_SAM_DROP: tuple[str, ...] = ("image_encoder.norm_head.", "image_encoder.head.")

#: SAM's pixel statistics (RGB, 0..255 scale).
SAM_PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
SAM_PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


def mobile_sam_key_map(sd: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map a ``mobile_sam.pt`` state dict onto :func:`build_mobile_sam`'s ``Sam``.

    Applies :data:`MOBILE_SAM_KEY_RULES` / :data:`MOBILE_SAM_DROP`, then gives every
    BatchNorm of ``model`` whose ``num_batches_tracked`` step counter the file lacks a 0,
    as ``torch`` does for such files (a counter, not a weight).
    """
    out = map_keys(sd, MOBILE_SAM_KEY_RULES, drop=MOBILE_SAM_DROP)
    for name, mod in model.named_modules():
        key = f"{name}.num_batches_tracked"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats and key not in out:
            out[key] = torch.zeros((), dtype=torch.long)
    return out


def build_mobile_sam(
    checkpoint: str | Path | None = None,
    image_size: int = 1024,
    config: str = "vit_t",
    *,
    encoder: str | None = None,
    prompt_embed_dim: int | None = None,
    mask_in_chans: int | None = None,
    decoder_depth: int | None = None,
    decoder_mlp_dim: int | None = None,
    decoder_num_heads: int | None = None,
    num_multimask_outputs: int | None = None,
    iou_head_depth: int | None = None,
    iou_head_hidden_dim: int | None = None,
    pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
    pixel_std: Sequence[float] = SAM_PIXEL_STD,
) -> Sam:
    """Build MobileSAM: a :class:`TinyViT` encoder in segment-anything's ``Sam``.

    Args:
        checkpoint: path of ``mobile_sam.pt`` (keys ``image_encoder.*``, ``prompt_encoder.*``,
            ``mask_decoder.*``); ``None`` leaves random weights.
        image_size: square input side; the embedding is ``image_size / 16`` per side.
        config: a name in :data:`MOBILE_SAM_CONFIGS` giving the defaults of the keyword
            arguments below (``None`` = take the config's value).
        encoder: a name in :data:`TINYVIT_CONFIGS`.
        prompt_embed_dim: channels of the image embedding and prompt tokens.
        mask_in_chans: hidden channels of the prompt encoder's mask branch.
        decoder_depth: two-way transformer layers of the mask decoder.
        decoder_mlp_dim: MLP width in the two-way transformer.
        decoder_num_heads: attention heads in the two-way transformer.
        num_multimask_outputs: masks output for ambiguous prompts (plus one single mask).
        iou_head_depth: layers of the IoU prediction MLP.
        iou_head_hidden_dim: width of the IoU prediction MLP.
        pixel_mean: RGB mean subtracted by ``Sam.preprocess`` (0..255 scale).
        pixel_std: RGB std divided by ``Sam.preprocess`` (0..255 scale).

    Returns:
        The ``Sam`` model in train mode (freezing is a training choice).

    Raises:
        TinyViTConfigError: unknown ``config`` / ``encoder`` names or sizes that do not fit.
        FileNotFoundError, CheckpointError: the checkpoint is absent or does not fit.
    """
    if config not in MOBILE_SAM_CONFIGS:
        raise TinyViTConfigError(f"unknown MobileSAM config {config!r}: choose one of {sorted(MOBILE_SAM_CONFIGS)}")
    given = dict(
        encoder=encoder,
        prompt_embed_dim=prompt_embed_dim,
        mask_in_chans=mask_in_chans,
        decoder_depth=decoder_depth,
        decoder_mlp_dim=decoder_mlp_dim,
        decoder_num_heads=decoder_num_heads,
        num_multimask_outputs=num_multimask_outputs,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )
    cfg = {**MOBILE_SAM_CONFIGS[config], **{k: v for k, v in given.items() if v is not None}}
    dim = cfg["prompt_embed_dim"]
    image_encoder = build_tinyvit(cfg["encoder"], img_size=image_size, neck_dim=dim)
    grid = image_encoder.embedding_size
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=cfg["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=cfg["decoder_depth"],
                embedding_dim=dim,
                mlp_dim=cfg["decoder_mlp_dim"],
                num_heads=cfg["decoder_num_heads"],
            ),
            transformer_dim=dim,
            iou_head_depth=cfg["iou_head_depth"],
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    )
    if checkpoint is not None:
        load_into(sam, mobile_sam_key_map(load_state_dict(checkpoint), sam), source=checkpoint)
    return sam
