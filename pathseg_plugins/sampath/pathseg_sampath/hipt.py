"""HIPT's first-stage ViT (ViT-S/16, 384-d, DINO-pretrained on TCGA 256² patches): SAM-Path's F_p.

Written from the architecture facts of HIPT (Chen et al., CVPR 2022): a plain DINO ViT with a
``[CLS]`` token, learned absolute position embedding for a ``14 x 14`` grid (224² pretraining
crops), pre-norm blocks (LayerNorm eps ``1e-6``, ``qkv`` with bias, GELU MLP ×4) and a final
LayerNorm. Module names follow the official ``vit256_small_dino.pth`` layout (after the
``teacher`` / ``backbone.`` wrappers are stripped), so :data:`HIPT_CHECKPOINT_RULES` is an explicit
prefix mapping and a state dict round-trips unchanged.

SAM-Path feeds the same 1024² image to HIPT as to SAM (``1024 / 16 = 64`` tokens per side, the
SAM grid); the position embedding is resized bicubically from ``14 x 14`` to the token grid at
run time, the DINO way (``scale_factor = (grid + 0.1) / 14``), so the stored parameter keeps the
checkpoint's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pathseg_core.models.checkpoint import CheckpointError, load_into, load_state_dict, map_keys

__all__ = [
    "HIPT_CHECKPOINT_RULES",
    "HIPT_CONFIGS",
    "HiptConfig",
    "HiptInputError",
    "HiptViT",
    "load_hipt_checkpoint",
    "read_hipt_state_dict",
]

#: Prefixes of the official checkpoint (DINO teacher, possibly DDP-wrapped) → :class:`HiptViT` names.
HIPT_CHECKPOINT_RULES: tuple[tuple[str, str], ...] = (
    ("module.backbone.", ""),
    ("backbone.", ""),
    ("module.", ""),
    ("cls_token", "cls_token"),
    ("pos_embed", "pos_embed"),
    ("patch_embed.", "patch_embed."),
    ("blocks.", "blocks."),
    ("norm.", "norm."),
)
#: DINO projection-head keys, not part of the encoder.
HIPT_DROP: tuple[str, ...] = ("head.", "module.head.", "backbone.head.")
#: Top-level key of DINO checkpoints holding the teacher network.
TEACHER_KEY = "teacher"


class HiptInputError(ValueError):
    """An input image whose size does not tile into the ViT's patch grid."""


@dataclass(frozen=True)
class HiptConfig:
    """Every constant of the HIPT ViT (defaults: the official ViT-S/16 ``vit256_small_dino``).

    Attributes:
        name: registry name.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        patch_size: patch side in pixels.
        pretrain_grid: side of the stored position-embedding grid (224 / 16 = 14).
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias in the ``qkv`` projection.
        layer_norm_eps: LayerNorm epsilon.
        pixel_mean: RGB mean in ``[0, 255]`` units (HIPT: 0.5 · 255).
        pixel_std: RGB std in ``[0, 255]`` units (HIPT: 0.5 · 255).
    """

    name: str = "vit_s16"
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 16
    pretrain_grid: int = 14
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    pixel_mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    pixel_std: tuple[float, float, float] = (127.5, 127.5, 127.5)


#: ``vit_s16``: HIPT's ViT-256 (ViT-S/16); ``tiny``: a test size with the same interfaces.
HIPT_CONFIGS: dict[str, HiptConfig] = {
    "vit_s16": HiptConfig(),
    "tiny": HiptConfig("tiny", embed_dim=24, depth=2, num_heads=2, patch_size=8, pretrain_grid=8),
}


class _Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (``[3 D, D]``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` → ``[B, L, D]``."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    """``fc1 → GELU → fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` → ``[B, L, D]``."""
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, cfg: HiptConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attn = _Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = _Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` → ``[B, L, D]``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution."""

    def __init__(self, cfg: HiptConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` → ``[B, D, H/p, W/p]``."""
        return self.proj(x)


class HiptViT(nn.Module):
    """HIPT ViT-256 returning dense patch tokens on the input's own patch grid.

    Args:
        cfg: architecture constants (:data:`HIPT_CONFIGS`).
    """

    def __init__(self, cfg: HiptConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or HiptConfig()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(
                f"HiptConfig {cfg.name!r}: embed_dim {cfg.embed_dim} not divisible by num_heads {cfg.num_heads}"
            )
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pretrain_grid**2 + 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), False)

    @property
    def embed_dim(self) -> int:
        """Token width ``D``."""
        return self.cfg.embed_dim

    def grid_pos_embed(self, grid_h: int, grid_w: int) -> Tensor:
        """Patch position embedding ``[1, D, grid_h, grid_w]`` resized from the stored grid.

        Bicubic, as DINO / HIPT / SAM-Path do it: ``scale_factor = (grid + 0.1) / g0`` (the
        ``+ 0.1`` guards against the output size rounding down), ``align_corners=False``.
        """
        g0 = self.cfg.pretrain_grid
        pos = self.pos_embed[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        if (grid_h, grid_w) == (g0, g0):
            return pos
        pos = F.interpolate(pos, scale_factor=((grid_h + 0.1) / g0, (grid_w + 0.1) / g0), mode="bicubic")
        if tuple(pos.shape[-2:]) != (grid_h, grid_w):  # cannot happen for sane sizes; guard anyway
            pos = F.interpolate(pos, size=(grid_h, grid_w), mode="bicubic")
        return pos

    def forward(self, x: Tensor) -> Tensor:
        """Dense tokens of normalised images.

        Args:
            x: ``[B, 3, H, W]`` normalised with :attr:`pixel_mean` / :attr:`pixel_std`; ``H`` and
                ``W`` multiples of ``patch_size``.

        Returns:
            ``[B, D, H/p, W/p]``: the final-LayerNorm patch tokens (``[CLS]`` dropped), row-major.
        """
        p = self.cfg.patch_size
        if x.dim() != 4 or x.shape[-2] % p or x.shape[-1] % p:
            raise HiptInputError(
                f"HIPT input {list(x.shape)} does not tile into {p}x{p} patches; resize images to a multiple of {p}"
            )
        tokens = self.patch_embed(x)
        b, d, gh, gw = tokens.shape
        pos = self.grid_pos_embed(gh, gw).flatten(2).transpose(1, 2)
        tokens = tokens.flatten(2).transpose(1, 2) + pos
        cls = self.cls_token + self.pos_embed[:, :1]
        z = torch.cat([cls.expand(b, -1, -1), tokens], dim=1)
        for block in self.blocks:
            z = block(z)
        z = self.norm(z)[:, 1:]
        return z.transpose(1, 2).reshape(b, d, gh, gw)

    def normalize(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in ``[0, 255]`` → HIPT's normalisation (mean 0.5, std 0.5 on ``[0, 1]``)."""
        return (images - self.pixel_mean) / self.pixel_std


def read_hipt_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The encoder state dict of an official-layout HIPT checkpoint, keys renamed to :class:`HiptViT`'s.

    Accepts a DINO checkpoint (``{"teacher": {...}}``) or a bare state dict, with or without
    ``module.`` / ``backbone.`` prefixes; the DINO projection head (``head.*``) is dropped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable file, or keys that no rule covers.
    """
    try:
        sd = load_state_dict(path, subkey=TEACHER_KEY)
    except CheckpointError as err:
        if f"has no key {TEACHER_KEY!r}" not in str(err):
            raise
        sd = load_state_dict(path)
    return map_keys(sd, HIPT_CHECKPOINT_RULES, drop=HIPT_DROP)


def load_hipt_checkpoint(model: HiptViT, path: str | Path) -> HiptViT:
    """Load ``vit256_small_dino.pth`` (or a same-layout file) into ``model``, strictly.

    A checkpoint of another architecture (e.g. ViT-B, 768-d) fails with one
    :class:`~pathseg_core.models.checkpoint.CheckpointError` line naming the shape mismatches.
    """
    sd = read_hipt_state_dict(path)
    pos = sd.get("pos_embed")
    if pos is not None and pos.shape[-1] == model.embed_dim and pos.shape[1] != model.pos_embed.shape[1]:
        g = math.isqrt(pos.shape[1] - 1)
        raise CheckpointError(
            f"HIPT checkpoint {path} has a {g}x{g} position grid but the model expects "
            f"{model.cfg.pretrain_grid}x{model.cfg.pretrain_grid}; set HiptConfig.pretrain_grid={g}"
        )
    load_into(model, sd, strict=True, source=path)
    return model
