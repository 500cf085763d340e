"""SAM (ViT image encoder): a name → config registry, builders, and the promptable segmenter.

* :data:`SAM_CONFIGS` holds the official ``vit_b`` / ``vit_l`` / ``vit_h`` constants and a
  ``tiny`` configuration for tests. Every constant is a :class:`SamConfig` field.
* :func:`build_sam` builds ``segment_anything.modeling.Sam`` from a name or a config and
  loads an official checkpoint (``sam_vit_b_01ec64.pth`` layout) through
  :mod:`pathseg_core.models.checkpoint`.
* :func:`vit_features` runs the ViT block by block and also returns intermediate features
  (what HQ-SAM / WSI-SAM style decoders consume).
* :class:`SamSegmenter` implements :class:`~pathseg_core.contracts.PromptableSegmenter`:
  ``encode`` once per image, ``decode`` any number of prompts given in the original
  image's pixel frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import Tensor, nn

from pathseg_core.contracts import Features, Prediction, PromptableSegmenter, PromptError, Prompts
from pathseg_core.models.checkpoint import load_into, load_state_dict, map_keys

__all__ = [
    "SAM_CHECKPOINT_RULES",
    "SAM_CONFIGS",
    "SAM_VIT_LORA_TARGETS",
    "SamConfig",
    "SamConfigError",
    "SamSegmenter",
    "build_image_encoder",
    "build_mask_decoder",
    "build_prompt_encoder",
    "build_sam",
    "load_sam_checkpoint",
    "vit_features",
]

#: Key mapping of the official SAM checkpoints onto :class:`Sam` / :class:`SamSegmenter`.
SAM_CHECKPOINT_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.", "image_encoder."),
    ("prompt_encoder.", "prompt_encoder."),
    ("mask_decoder.", "mask_decoder."),
)

#: peft ``target_modules`` for the ViT attention projections only. Plain ``"proj"`` would
#: also match the patch embedding's ``patch_embed.proj`` convolution.
SAM_VIT_LORA_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj")


class SamConfigError(ValueError):
    """An unknown config name or inconsistent SAM constants."""


@dataclass(frozen=True)
class SamConfig:
    """Every constant of a SAM model (defaults: the official ones shared by all sizes).

    Attributes:
        name: registry name, part of :meth:`SamSegmenter.encoder_signature`.
        encoder_embed_dim: ViT token width.
        encoder_depth: number of ViT blocks.
        encoder_num_heads: attention heads per block.
        encoder_global_attn_indexes: blocks with global (not windowed) attention.
        image_size: side of the square encoder input in pixels.
        patch_size: ViT patch side; the embedding is ``image_size / patch_size`` square.
        window_size: side of the attention windows of the other blocks (tokens).
        prompt_embed_dim: encoder output channels = prompt / decoder transformer width.
        mlp_ratio: ViT MLP hidden width over ``encoder_embed_dim``.
        qkv_bias: bias in the ViT ``qkv`` projection.
        use_rel_pos: relative position bias in ViT attention.
        layer_norm_eps: epsilon of the ViT layer norms.
        mask_in_chans: hidden channels of the mask-prompt downscaler.
        decoder_depth: two-way transformer layers.
        decoder_mlp_dim: two-way transformer MLP width.
        decoder_num_heads: two-way transformer heads.
        num_multimask_outputs: masks predicted for ambiguous prompts.
        iou_head_depth: layers of the IoU prediction MLP.
        iou_head_hidden_dim: width of the IoU prediction MLP.
        pixel_mean: RGB mean in ``[0, 255]`` units.
        pixel_std: RGB standard deviation in ``[0, 255]`` units.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_rel_pos: bool = True
    layer_norm_eps: float = 1e-6
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise SamConfigError(
                f"SamConfig {self.name!r}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise SamConfigError(
                f"SamConfig {self.name!r}: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_num_heads {self.encoder_num_heads}"
            )
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad or not self.encoder_global_attn_indexes:
            raise SamConfigError(
                f"SamConfig {self.name!r}: encoder_global_attn_indexes {list(self.encoder_global_attn_indexes)} "
                f"must be a non-empty list of block indexes below encoder_depth {self.encoder_depth}"
            )
        if self.prompt_embed_dim % 8 or self.mask_in_chans % 4:
            raise SamConfigError(
                f"SamConfig {self.name!r}: prompt_embed_dim must be a multiple of 8 and mask_in_chans of 4 "
                f"(got {self.prompt_embed_dim}, {self.mask_in_chans})"
            )

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding (tokens)."""
        return self.image_size // self.patch_size


#: Registry of SAM configurations by name (segment-anything's ``sam_model_registry``).
SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Test-sized: 128 px input, 16x16 tokens, 64x64 low-res masks; same interfaces as SAM.
    "tiny": SamConfig(
        "tiny",
        encoder_embed_dim=32,
        encoder_depth=4,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1, 3),
        image_size=128,
        patch_size=8,
        window_size=4,
        prompt_embed_dim=32,
        mask_in_chans=8,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
    ),
}


def resolve_config(name_or_config: str | SamConfig, **overrides: object) -> SamConfig:
    """A registered config by name (or the config itself), with fields replaced by ``overrides``."""
    if isinstance(name_or_config, SamConfig):
        cfg = name_or_config
    elif name_or_config in SAM_CONFIGS:
        cfg = SAM_CONFIGS[name_or_config]
    else:
        raise SamConfigError(f"unknown SAM config {name_or_config!r}; choose one of {', '.join(SAM_CONFIGS)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(SamConfig)})
    if unknown:
        raise SamConfigError(f"SamConfig has no field(s) {', '.join(unknown)}; see SamConfig's attributes")
    if "encoder_global_attn_indexes" in overrides:
        overrides["encoder_global_attn_indexes"] = tuple(overrides["encoder_global_attn_indexes"])  # type: ignore[arg-type]
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def build_image_encoder(cfg: SamConfig) -> ImageEncoderViT:
    """The ViT image encoder: ``[B, 3, S, S]`` → ``[B, prompt_embed_dim, S/patch, S/patch]``."""
    return ImageEncoderViT(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.encoder_embed_dim,
        depth=cfg.encoder_depth,
        num_heads=cfg.encoder_num_heads,
        mlp_ratio=cfg.mlp_ratio,
        out_chans=cfg.prompt_embed_dim,
        qkv_bias=cfg.qkv_bias,
        norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
        use_rel_pos=cfg.use_rel_pos,
        window_size=cfg.window_size,
        global_attn_indexes=cfg.encoder_global_attn_indexes,
    )


def build_prompt_encoder(cfg: SamConfig) -> PromptEncoder:
    """The prompt encoder for points / boxes (xy in the ``S x S`` encoder frame) and masks."""
    side = cfg.embedding_size
    return PromptEncoder(
        embed_dim=cfg.prompt_embed_dim,
        image_embedding_size=(side, side),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=cfg.mask_in_chans,
    )


def build_mask_decoder(cfg: SamConfig) -> MaskDecoder:
    """The two-way-transformer mask decoder (low-res masks at 4x the embedding side)."""
    return MaskDecoder(
        num_multimask_outputs=cfg.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=cfg.decoder_depth,
            embedding_dim=cfg.prompt_embed_dim,
            mlp_dim=cfg.decoder_mlp_dim,
            num_heads=cfg.decoder_num_heads,
        ),
        transformer_dim=cfg.prompt_embed_dim,
        iou_head_depth=cfg.iou_head_depth,
        iou_head_hidden_dim=cfg.iou_head_hidden_dim,
    )


def load_sam_checkpoint(module: nn.Module, checkpoint: str | Path, *, strict: bool = True) -> list[str]:
    """Load an official-layout SAM checkpoint into a :class:`Sam` or :class:`SamSegmenter`.

    Returns the module keys the checkpoint did not provide (only possible with
    ``strict=False``). Raises :class:`~pathseg_core.models.checkpoint.CheckpointError`.
    """
    sd = map_keys(load_state_dict(checkpoint), SAM_CHECKPOINT_RULES)
    return load_into(module, sd, strict=strict, source=checkpoint)


def build_sam(
    name_or_config: str | SamConfig,
    checkpoint: str | Path | None = None,
    *,
    strict: bool = True,
) -> Sam:
    """Build ``segment_anything.modeling.Sam`` from a registered name or a :class:`SamConfig`.

    Args:
        name_or_config: a key of :data:`SAM_CONFIGS` or a config.
        checkpoint: path of a state dict in the official layout (``image_encoder.*``,
            ``prompt_encoder.*``, ``mask_decoder.*``), e.g. ``sam_vit_b_01ec64.pth``.
        strict: see :func:`~pathseg_core.models.checkpoint.load_into`.

    The model is returned in training mode with gradients enabled (SAM has neither dropout
    nor batch norm, so the mode does not change its outputs).
    """
    cfg = resolve_config(name_or_config)
    sam = Sam(
        image_encoder=build_image_encoder(cfg),
        prompt_encoder=build_prompt_encoder(cfg),
        mask_decoder=build_mask_decoder(cfg),
        pixel_mean=list(cfg.pixel_mean),
        pixel_std=list(cfg.pixel_std),
    )
    if checkpoint is not None:
        load_sam_checkpoint(sam, checkpoint, strict=strict)
    return sam


def vit_features(encoder: ImageEncoderViT, x: Tensor, *, neck: bool = True) -> Features:
    """Run the SAM ViT block by block on preprocessed ``x [B, 3, S, S]``.

    Args:
        encoder: SAM's ViT.
        x: preprocessed images.
        neck: run the neck; ``False`` skips it (for models such as SAM-Path that replace
            it), and ``"embedding"`` is then absent.

    Returns:
        ``"embedding"``: neck output ``[B, C_out, h, w]`` (same as ``encoder(x)``);
        ``"early"``: output of the first global-attention block ``[B, h, w, C]``;
        ``"late"``: output of the last block ``[B, h, w, C]`` (the neck's input).
    """
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    early: Tensor | None = None
    for block in encoder.blocks:
        x = block(x)
        if early is None and block.window_size == 0:
            early = x
    if early is None:
        raise SamConfigError("vit_features: the encoder has no global-attention block to take 'early' features from")
    if not neck:
        return {"early": early, "late": x}
    return {"embedding": encoder.neck(x.permute(0, 3, 1, 2)), "early": early, "late": x}


def tensor_digest(module: nn.Module, extra: Sequence[Tensor] = ()) -> str:
    """Hex digest of every state-dict entry's name, dtype, shape and bytes (plus ``extra``)."""
    h = hashlib.blake2b(digest_size=8)
    items = list(module.state_dict().items()) + [(f"extra{i}", t) for i, t in enumerate(extra)]
    for name, t in items:
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class SamSegmenter(PromptableSegmenter):
    """SAM as a :class:`~pathseg_core.contracts.PromptableSegmenter`.

    ``encode`` resizes the longest image side to ``image_size``, normalises, pads
    bottom/right to a square and runs the ViT; ``decode`` maps prompts from the original
    image frame into the encoder frame and returns low-resolution logits cropped to the
    image (not the padding).

    Args:
        image_encoder: SAM's ViT (features from :func:`vit_features`), or any SAM-compatible
            encoder with an ``img_size`` attribute whose ``forward_features(x)`` returns
            ``Features`` (e.g. MobileSAM's TinyViT) or whose ``forward(x)`` returns the
            embedding. Its ``img_size`` sets :attr:`image_size`.
        prompt_encoder: SAM prompt encoder for that image size.
        mask_decoder: SAM mask decoder.
        pixel_mean: RGB mean in ``[0, 255]`` units.
        pixel_std: RGB standard deviation in ``[0, 255]`` units.
        multimask_output: predict ``num_multimask_outputs`` masks per prompt and keep the
            one with the highest predicted IoU (SAM's choice for ambiguous point prompts);
            all of them are also returned in ``Prediction.extras``.
        name: config name, part of :meth:`encoder_signature`.
        mask_pad_value: logit written into the padded part of mask prompts (the padding
            is background to SAM, hence strongly negative).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = SamConfig.pixel_mean,
        pixel_std: Sequence[float] = SamConfig.pixel_std,
        *,
        multimask_output: bool = False,
        name: str = "sam",
        mask_pad_value: float = -20.0,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = int(image_encoder.img_size)
        if tuple(prompt_encoder.input_image_size) != (self.image_size, self.image_size):
            raise SamConfigError(
                f"prompt encoder expects {tuple(prompt_encoder.input_image_size)} inputs but the image encoder "
                f"takes {self.image_size}x{self.image_size}; build both from one SamConfig"
            )
        self.multimask_output = multimask_output
        self.name = name
        self.mask_pad_value = mask_pad_value
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @classmethod
    def from_sam(cls, sam: Sam, **options: Any) -> SamSegmenter:
        """Wrap the parts of a built ``Sam`` (shared, not copied); ``options`` go to the constructor.

        Subclasses (e.g. WSI-SAM's) pass their own keyword options the same way.
        """
        return cls(
            sam.image_encoder,
            sam.prompt_encoder,
            sam.mask_decoder,
            sam.pixel_mean.flatten().tolist(),
            sam.pixel_std.flatten().tolist(),
            **options,
        )

    @classmethod
    def from_config(
        cls,
        name: str | SamConfig,
        checkpoint: str | Path | None = None,
        *,
        multimask_output: bool = False,
        strict: bool = True,
        **overrides: object,
    ) -> SamSegmenter:
        """Build from a registered name (or config), ``overrides`` replacing :class:`SamConfig` fields."""
        cfg = resolve_config(name, **overrides)
        return cls.from_sam(build_sam(cfg, checkpoint, strict=strict), multimask_output=multimask_output, name=cfg.name)

    # ---------------------------------------------------------------- geometry

    def resized_hw(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height x width`` image once its longest side is ``image_size``."""
        scale = self.image_size / max(height, width)
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in ``[0, 255]`` → normalised, padded ``[B, 3, S, S]``, ``S = image_size``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise PromptError(f"images must be [B, 3, H, W] RGB, got {list(images.shape)}")
        if not images.is_floating_point():
            images = images.float()
        h, w = images.shape[-2:]
        new_hw = self.resized_hw(h, w)
        if new_hw != (h, w):
            images = F.interpolate(images, size=new_hw, mode="bilinear", align_corners=False, antialias=True)
        x = (images - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, self.image_size - new_hw[1], 0, self.image_size - new_hw[0]))

    # ---------------------------------------------------------------- encode / decode

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:
        """Features of ``[B, 3, H, W]`` images in ``[0, 255]``.

        Returns :meth:`encoder_features` (for SAM's ViT: ``"embedding"``, ``"early"``,
        ``"late"``, see :func:`vit_features`) plus ``"input_hw"`` ``[B, 2]`` long, the
        ``(H, W)`` of the input, which is all :meth:`decode` needs besides the features (so
        features can be cached). ``context`` is ignored: SAM sees one field of view.
        """
        features = self.encoder_features(self.preprocess(images))
        b, _, h, w = images.shape
        features["input_hw"] = torch.tensor([[h, w]], dtype=torch.long, device=images.device).repeat(b, 1)
        return features

    def encoder_features(self, x: Tensor) -> Features:
        """Run the image encoder on preprocessed ``x [B, 3, S, S]``; ``"embedding"`` is always present."""
        if isinstance(self.image_encoder, ImageEncoderViT):
            return vit_features(self.image_encoder, x)
        forward_features = getattr(self.image_encoder, "forward_features", None)
        if callable(forward_features):
            return dict(forward_features(x))
        return {"embedding": self.image_encoder(x)}

    def _input_hw(self, features: Features) -> tuple[int, int]:
        hw = features.get("input_hw")
        if hw is None:
            raise PromptError("features lack 'input_hw' [B, 2]; produce them with SamSegmenter.encode")
        if hw.shape[0] and not bool((hw == hw[:1]).all()):
            raise PromptError(f"features mix images of different sizes {hw.unique(dim=0).tolist()}; decode them apart")
        return int(hw[0, 0]), int(hw[0, 1])

    def _mask_prompts(self, masks: Tensor, new_hw: tuple[int, int]) -> Tensor:
        """``[M, 1, h, w]`` logits over the original image → ``[M, 1, 4e, 4e]`` over the padded frame."""
        side = self.prompt_encoder.mask_input_size[0]
        mh, mw = (max(1, round(s * side / self.image_size)) for s in new_hw)
        if tuple(masks.shape[-2:]) != (mh, mw):
            masks = F.interpolate(masks, size=(mh, mw), mode="bilinear", align_corners=False)
        return F.pad(masks, (0, side - mw, 0, side - mh), value=self.mask_pad_value)

    def embed_prompts(self, prompts: Prompts, in_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Sparse ``[B·N, T, C]`` and dense ``[B·N, C, e, e]`` embeddings of prompts given in the input frame."""
        b, n = prompts.shape
        in_h, in_w = in_hw
        new_h, new_w = self.resized_hw(in_h, in_w)
        sx, sy = new_w / in_w, new_h / in_h
        boxes = points = masks = None
        if prompts.boxes is not None:
            boxes = (prompts.boxes.float() * prompts.boxes.new_tensor([sx, sy, sx, sy])).reshape(b * n, 4)
        if prompts.points is not None:
            coords = prompts.points.float() * prompts.points.new_tensor([sx, sy])
            points = (coords.reshape(b * n, -1, 2), prompts.point_labels.reshape(b * n, -1))
        if prompts.masks is not None:
            masks = self._mask_prompts(prompts.masks.flatten(0, 1).float(), (new_h, new_w))
        return self.prompt_encoder(points=points, boxes=boxes, masks=masks)

    def low_res_crop(self, in_h: int, in_w: int) -> tuple[int, int]:
        """``(h, w)`` of the low-res decoder logits that cover the un-padded input image."""
        new_h, new_w = self.resized_hw(in_h, in_w)
        low_side = 4 * self.prompt_encoder.image_embedding_size[0]
        return tuple(max(1, round(s * low_side / self.image_size)) for s in (new_h, new_w))

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:
        """Mask logits for ``N`` prompts per image.

        Args:
            features: from :meth:`encode` (possibly cached).
            prompts: in the ORIGINAL image's pixel frame: boxes ``[B, N, 4]`` xyxy, points
                ``[B, N, P, 2]`` xy with labels ``[B, N, P]`` (1 positive, 0 negative, -1
                padding), mask prompts ``[B, N, 1, h, w]`` logits covering the whole image
                (e.g. a previous ``mask_logits`` output; resized as needed).

        Returns:
            ``Prediction(mask_logits [B, N, h', w'], iou_pred [B, N])``: low-resolution
            logits cropped to the un-padded image, so they span exactly the input image
            extent (up to rounding to whole low-res pixels). With ``multimask_output``,
            ``extras`` holds ``"multimask_logits" [B, N, K, h', w']`` and
            ``"multimask_iou" [B, N, K]``.
        """
        if prompts is None:
            raise PromptError("SamSegmenter.decode needs prompts (boxes, points or masks); got None")
        embedding = features["embedding"]
        b = int(embedding.shape[0])
        in_h, in_w = self._input_hw(features)
        prompts.validate(b, (in_h, in_w))
        _, n = prompts.shape
        crop_h, crop_w = self.low_res_crop(in_h, in_w)
        k = self.mask_decoder.num_multimask_outputs if self.multimask_output else 1
        if n == 0:
            empty = embedding.new_zeros(b, 0, k, crop_h, crop_w)
            return self._select(empty, embedding.new_zeros(b, 0, k))

        sparse, dense = self.embed_prompts(prompts, (in_h, in_w))
        image_pe = self.prompt_encoder.get_dense_pe()
        # segment-anything 1.0's MaskDecoder repeat_interleaves the image embedding by the
        # number of prompts itself, so it is called once per image with that image's N prompts.
        logits, ious = [], []
        for i in range(b):
            rows = slice(i * n, (i + 1) * n)
            low, iou = self.mask_decoder(
                image_embeddings=embedding[i : i + 1],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse[rows],
                dense_prompt_embeddings=dense[rows],
                multimask_output=self.multimask_output,
            )
            logits.append(low[..., :crop_h, :crop_w])
            ious.append(iou)
        return self._select(torch.stack(logits), torch.stack(ious))

    def _select(self, logits: Tensor, iou: Tensor) -> Prediction:
        """``[B, N, K, h, w]`` / ``[B, N, K]`` → the best of ``K`` masks per prompt."""
        if not self.multimask_output:
            return Prediction(logits[:, :, 0], iou[:, :, 0])
        best = iou.argmax(dim=-1, keepdim=True)  # [B, N, 1]
        chosen = logits.gather(2, best[..., None, None].expand(-1, -1, -1, *logits.shape[-2:]))
        extras = {"multimask_logits": logits, "multimask_iou": iou}
        return Prediction(chosen[:, :, 0], iou.gather(2, best)[..., 0], extras)

    def encoder_signature(self) -> str:
        """``sam:<name>:<image_size>:<digest>``, a key for embedding caches.

        The digest covers the encoder's parameter names, shapes, dtypes and values and the
        normalisation constants, so it changes whenever encoder outputs would.
        """
        digest = tensor_digest(self.image_encoder, (self.pixel_mean, self.pixel_std))
        return f"sam:{self.name}:{self.image_size}:{digest}"
