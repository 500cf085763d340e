"""Prompt simulation: boxes, points and coarse masks drawn from label maps (train and eval protocols).

Coordinates follow segment-anything: boxes are ``xyxy``, points ``xy`` = (column, row),
both in pixels of the image the labels belong to. Every random draw takes a seeded
``torch.Generator``; nothing here touches a global RNG.

Conventions:

* Box edges (:func:`box_from_mask`): pixel ``(row r, col c)`` covers ``[c, c + 1) x
  [r, r + 1)``, so a tight box is ``x1 = min col``, ``y1 = min row``, ``x2 = max col + 1``,
  ``y2 = max row + 1``, and boxes stay inside ``[0, W] x [0, H]``. (WSI-SAM's and HQ-SAM's
  ``masks_to_boxes`` use ``x2 = max col``: one pixel tighter on the right and bottom.)
* Points (:func:`sample_points`) are integer pixel indices ``(col, row)``; SAM's prompt
  encoder adds ``0.5`` itself to reach the pixel centre.
* Mask prompts (:func:`noisy_mask_prompt`) are logits ``±logit_value`` at SAM's
  ``256 x 256`` mask-input resolution, laid out as SAM lays out its input: the longest image
  side scaled to ``out_size``, padding (background) at the bottom / right.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from pathseg_core.contracts import IGNORE_INDEX, Prompts, Targets

__all__ = [
    "PRESETS",
    "PromptSampler",
    "PromptSimulationError",
    "box_from_mask",
    "eval_generator",
    "extract_objects",
    "jitter_boxes",
    "noisy_mask_prompt",
    "sample_key",
    "sample_points",
    "stack_prompt_samples",
]

PromptMode = Literal["box", "points", "mask", "mixed"]
ObjectMode = Literal["components", "classes"]
_KINDS: tuple[Literal["box", "points", "mask"], ...] = ("box", "points", "mask")


class PromptSimulationError(ValueError):
    """Arguments or label maps that prompts cannot be simulated from."""


def _uniform(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``U(-1, 1)`` samples drawn on the CPU (so results do not depend on the device)."""
    return (torch.rand(tuple(shape), generator=generator) * 2.0 - 1.0).to(device)


def extract_objects(
    labels: Tensor,
    *,
    mode: ObjectMode = "components",
    classes: Sequence[int] | None = None,
    ignore_index: int = IGNORE_INDEX,
    background: int = 0,
    min_area: int = 16,
    max_objects: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Objects of a label map: connected components of each class, or one region per class.

    Components use 8-connectivity (``scipy.ndimage.label`` with a 3x3 structure). Objects
    are ordered by class id, then by component label (row-major first pixel).

    Args:
        labels: ``[H, W]`` long class ids.
        mode: ``"components"`` (each connected piece) or ``"classes"`` (all pixels of a class).
        classes: foreground class ids to use (default: every id present except
            ``background`` and ``ignore_index``).
        ignore_index: label value that is never an object.
        background: label value that is never an object (unless listed in ``classes``).
        min_area: objects with fewer pixels are dropped.
        max_objects: keep at most this many: a uniform random subset when ``generator``
            is given, else the largest ones; order is preserved. None keeps all.
        generator: seeded generator for the random subset.

    Returns:
        ``(masks [N, H, W] bool, class_ids [N] long)`` on ``labels.device``; ``N`` may be 0.
    """
    if labels.dim() != 2:
        raise PromptSimulationError(f"labels must be [H, W], got {list(labels.shape)}")
    if mode not in ("components", "classes"):
        raise PromptSimulationError(f"object mode must be 'components' or 'classes', got {mode!r}")
    lab = labels.detach().cpu().numpy()
    if classes is None:
        present = np.unique(lab)
        classes = [int(c) for c in present if c not in (background, ignore_index)]
    structure = np.ones((3, 3), dtype=bool)
    # Candidates as (class id, component map or None, component label, area); masks are
    # built only for the kept ones.
    candidates: list[tuple[int, np.ndarray | None, int, int]] = []
    for c in classes:
        region = lab == c
        if mode == "classes":
            candidates.append((int(c), None, 0, int(region.sum())))
            continue
        comp, n = ndimage.label(region, structure=structure)
        areas = np.bincount(comp.ravel(), minlength=n + 1)
        candidates.extend((int(c), comp, i, int(areas[i])) for i in range(1, n + 1))
    candidates = [cand for cand in candidates if cand[3] >= min_area]
    if max_objects is not None and len(candidates) > max_objects:
        if generator is not None:
            keep = torch.randperm(len(candidates), generator=generator)[:max_objects]
        else:
            areas_t = torch.tensor([cand[3] for cand in candidates])
            keep = torch.argsort(areas_t, descending=True, stable=True)[:max_objects]
        candidates = [candidates[i] for i in keep.sort().values.tolist()]
    h, w = lab.shape
    masks = [lab == c if comp is None else comp == i for c, comp, i, _ in candidates]
    out = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
    ids = torch.tensor([cand[0] for cand in candidates], dtype=torch.long)
    return out.to(labels.device), ids.to(labels.device)


def box_from_mask(mask: Tensor) -> Tensor:
    """Tight ``xyxy`` box(es) in the pixel-edge convention (``x2 = max col + 1``).

    Args:
        mask: ``[H, W]`` or ``[N, H, W]`` bool; each mask must be non-empty.

    Returns:
        ``[4]`` or ``[N, 4]`` float ``(x1, y1, x2, y2)``.
    """
    single = mask.dim() == 2
    m = mask[None] if single else mask
    if m.dim() != 3:
        raise PromptSimulationError(f"mask must be [H, W] or [N, H, W], got {list(mask.shape)}")
    m = m.bool()
    cols, rows = m.any(dim=1), m.any(dim=2)  # [N, W], [N, H]
    if not cols.any(dim=1).all():
        raise PromptSimulationError("box_from_mask got an empty mask: drop empty objects first")
    w, h = m.shape[-1], m.shape[-2]
    x1 = cols.float().argmax(dim=1)
    x2 = w - cols.flip(1).float().argmax(dim=1)
    y1 = rows.float().argmax(dim=1)
    y2 = h - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes[0] if single else boxes


def jitter_boxes(boxes: Tensor, rel: float, generator: torch.Generator | None, image_size: tuple[int, int]) -> Tensor:
    """SAM / WSI-SAM box noise: move the centre and resize, relative to the box size, then clamp.

    With ``(cx, cy, w, h)`` of each box and independent ``u ~ U(-1, 1)``:
    ``cx += u·rel·w/2``, ``cy += u·rel·h/2``, ``w += u·rel·w``, ``h += u·rel·h``; the result is
    clamped to ``[0, W] x [0, H]``.

    Args:
        boxes: ``[N, 4]`` ``xyxy`` pixels.
        rel: noise scale in ``[0, 1)``; 0 returns the boxes unchanged.
        generator: seeded generator.
        image_size: ``(H, W)`` of the image the boxes prompt.

    Returns:
        ``[N, 4]`` float ``xyxy``.
    """
    if not 0.0 <= rel < 1.0:
        raise PromptSimulationError(f"box jitter rel={rel} must be in [0, 1) so boxes keep a positive size")
    boxes = boxes.float()
    if rel == 0.0 or boxes.numel() == 0:
        return boxes.clone()
    h_img, w_img = image_size
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    u = _uniform((boxes.shape[0], 4), generator, boxes.device)
    centre = centre + u[:, :2] * rel * wh / 2
    wh = wh + u[:, 2:] * rel * wh
    out = torch.cat([centre - wh / 2, centre + wh / 2], dim=1)
    limits = torch.tensor([w_img, h_img, w_img, h_img], dtype=out.dtype, device=out.device)
    return torch.minimum(out.clamp(min=0.0), limits)


def _draw(candidates: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` rows of ``candidates`` ``[K, 2]``: without replacement when ``K >= n``, else with."""
    k = candidates.shape[0]
    if k >= n:
        idx = torch.randperm(k, generator=generator)[:n]
    else:
        idx = torch.randint(k, (n,), generator=generator)
    return candidates[idx.to(candidates.device)]


def sample_points(
    mask: Tensor,
    n_pos: int,
    n_neg: int,
    generator: torch.Generator | None,
    *,
    neg_region: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Uniform positive points inside an object and negative points outside it.

    Positives are drawn without replacement, or with replacement when the object has fewer
    than ``n_pos`` pixels. Negatives come from ``neg_region & ~mask``; when that is empty the
    negative slots are padding (label ``-1``, point ``(0, 0)``).

    Args:
        mask: ``[H, W]`` bool object, non-empty.
        n_pos: positive points.
        n_neg: negative points.
        generator: seeded generator.
        neg_region: ``[H, W]`` bool where negatives may fall (e.g. inside the object's box
            and off ignore pixels); default the whole image.

    Returns:
        ``(points [n_pos + n_neg, 2] float xy pixel indices, labels [n_pos + n_neg] long)``
        with labels 1 (positive), 0 (negative), -1 (padding); positives first.
    """
    if mask.dim() != 2:
        raise PromptSimulationError(f"mask must be [H, W], got {list(mask.shape)}")
    if n_pos < 0 or n_neg < 0:
        raise PromptSimulationError(f"point counts must be >= 0, got n_pos={n_pos}, n_neg={n_neg}")
    mask = mask.bool()
    pos = torch.nonzero(mask).flip(1)  # [K, 2] (col, row) = xy
    if n_pos and pos.shape[0] == 0:
        raise PromptSimulationError("sample_points got an empty object mask: drop empty objects first")
    points = [_draw(pos, n_pos, generator).float()] if n_pos else []
    labels = [torch.ones(n_pos, dtype=torch.long, device=mask.device)]
    if n_neg:
        region = ~mask if neg_region is None else neg_region.bool() & ~mask
        neg = torch.nonzero(region).flip(1)
        if neg.shape[0]:
            points.append(_draw(neg, n_neg, generator).float())
            labels.append(torch.zeros(n_neg, dtype=torch.long, device=mask.device))
        else:
            points.append(torch.zeros(n_neg, 2, device=mask.device))
            labels.append(torch.full((n_neg,), -1, dtype=torch.long, device=mask.device))
    if not points:
        return torch.zeros(0, 2, device=mask.device), torch.zeros(0, dtype=torch.long, device=mask.device)
    return torch.cat(points), torch.cat(labels)


def _resize_longest_and_pad(mask: Tensor, out_size: int) -> Tensor:
    """``[H, W]`` 0/1 → ``[out, out]`` area-averaged, longest side = ``out``, zero-padded bottom/right."""
    h, w = mask.shape
    scale = out_size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    soft = F.interpolate(mask.float()[None, None], size=(nh, nw), mode="area")[0, 0]
    return F.pad(soft, (0, out_size - nw, 0, out_size - nh))


def noisy_mask_prompt(
    mask: Tensor,
    out_size: int = 256,
    generator: torch.Generator | None = None,
    sigma: float = 1.0,
    *,
    band_width: int = 3,
    logit_value: float = 8.0,
) -> Tensor:
    """A degraded mask prompt: Gaussian noise on the boundary band, then threshold (WSI-SAM).

    Steps: area-resize the mask so its longest side is ``out_size`` (padding bottom / right,
    SAM's input layout) giving soft values in ``[0, 1]``; add ``N(0, sigma²)`` noise on the
    pixels within ``band_width`` px of the boundary (dilation XOR erosion of the resized
    mask); keep ``> 0.5``. WSI-SAM's code does the same with its band taken where a
    1/8-down-then-up resize differs from the mask, and ``sigma = 1``.

    Args:
        mask: ``[H, W]`` bool / 0-1 object mask.
        out_size: side of the square output (SAM: 256).
        generator: seeded generator.
        sigma: noise standard deviation.
        band_width: boundary band half-width in output pixels.
        logit_value: magnitude of the output logits.

    Returns:
        ``[1, out_size, out_size]`` float: ``+logit_value`` inside, ``-logit_value`` outside.
    """
    if mask.dim() != 2:
        raise PromptSimulationError(f"mask must be [H, W], got {list(mask.shape)}")
    soft = _resize_longest_and_pad(mask, out_size)
    hard = (soft > 0.5).float()[None, None]
    k = 2 * band_width + 1
    dilated = F.max_pool2d(hard, k, stride=1, padding=band_width)
    eroded = 1.0 - F.max_pool2d(1.0 - hard, k, stride=1, padding=band_width)
    band = (dilated != eroded)[0, 0]
    noise = torch.randn(soft.shape, generator=generator).to(soft.device) * sigma
    noisy = soft + noise * band
    return torch.where(noisy > 0.5, logit_value, -logit_value)[None]


def eval_generator(seed: int, batch_idx: int) -> torch.Generator:
    """A CPU generator fixed by ``(seed, batch_idx)``: evaluation prompts repeat exactly run to run."""
    state = np.random.SeedSequence([int(seed), int(batch_idx)]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


#: Named protocols; :meth:`PromptSampler.from_preset` builds them.
PRESETS: dict[str, dict[str, object]] = {
    # WSI-SAM's paper evaluates with "noise added to the GT object boxes" and states no
    # scale; its official code's ``box_noise`` defaults to 0.2 (train.py, utils/misc.py).
    "noisy_box": {"mode": "box", "box_jitter": 0.2},
    "box": {"mode": "box", "box_jitter": 0.0},
    "points3": {"mode": "points", "n_pos": 3, "n_neg": 0},
    "points5": {"mode": "points", "n_pos": 5, "n_neg": 0},
    "points10": {"mode": "points", "n_pos": 10, "n_neg": 0},
    # WSI-SAM training: box (noise 0.2) / 10 positive points / noisy mask, one drawn at random.
    "wsisam_train": {"mode": "mixed", "box_jitter": 0.2, "n_pos": 10, "n_neg": 0, "mask_sigma": 1.0},
}


class PromptSampler:
    """Simulates prompts and per-prompt targets from semantic label maps.

    Each image's objects come from :func:`extract_objects`; each object gets a prompt of the
    configured ``mode``. Slots are padded to the largest object count in the batch (at
    least 1); ``Prompts.valid`` marks the real ones, so images with no object have
    ``valid`` all False and callers skip them.

    ``mode="mixed"`` draws one of box / points / mask per call (per batch), not per object:
    the ``Prompts`` contract has no per-object prompt-type flag, so every object of a batch
    shares one type. With WSI-SAM's batch size of 1 this is its per-sample draw.

    Args:
        mode: prompt type.
        box_jitter: relative box noise (:func:`jitter_boxes`); 0 = tight boxes.
        n_pos: positive points per object.
        n_neg: negative points per object.
        neg_in_box: draw negatives inside the object's (tight) box only.
        object_mode: ``"components"`` or ``"classes"`` (:func:`extract_objects`).
        classes: foreground classes (default: all but background and ignore).
        min_area: smallest object in pixels.
        max_objects: most objects per image.
        mask_size: side of mask prompts (SAM: 256).
        mask_sigma: noise std of mask prompts.
        mask_band: boundary band half-width of mask prompts, in ``mask_size`` pixels.
        mask_logit: magnitude of mask-prompt logits (padded slots hold ``-mask_logit``).
        ignore_index: label value that is never an object nor a negative point.
        background: label value that is background.
        seed: seed of the sampler's own generator, used when ``__call__`` gets none.
    """

    def __init__(
        self,
        mode: PromptMode = "box",
        box_jitter: float = 0.0,
        n_pos: int = 1,
        n_neg: int = 0,
        neg_in_box: bool = False,
        object_mode: ObjectMode = "components",
        classes: list[int] | None = None,
        min_area: int = 16,
        max_objects: int = 16,
        mask_size: int = 256,
        mask_sigma: float = 1.0,
        mask_band: int = 3,
        mask_logit: float = 8.0,
        ignore_index: int = IGNORE_INDEX,
        background: int = 0,
        seed: int = 0,
    ) -> None:
        """Validate and store the protocol; see the class docstring for each argument."""
        if mode not in ("box", "points", "mask", "mixed"):
            raise PromptSimulationError(f"PromptSampler mode must be box|points|mask|mixed, got {mode!r}")
        if not 0.0 <= box_jitter < 1.0:
            raise PromptSimulationError(f"PromptSampler box_jitter={box_jitter} must be in [0, 1)")
        if mode in ("points", "mixed") and n_pos + n_neg < 1:
            raise PromptSimulationError(f"PromptSampler mode={mode!r} needs n_pos + n_neg >= 1")
        if max_objects < 1 or min_area < 1:
            raise PromptSimulationError(
                f"PromptSampler max_objects and min_area must be >= 1, got {max_objects}, {min_area}"
            )
        self.mode: PromptMode = mode
        self.box_jitter = box_jitter
        self.n_pos = n_pos
        self.n_neg = n_neg
        self.neg_in_box = neg_in_box
        self.object_mode: ObjectMode = object_mode
        self.classes = classes
        self.min_area = min_area
        self.max_objects = max_objects
        self.mask_size = mask_size
        self.mask_sigma = mask_sigma
        self.mask_band = mask_band
        self.mask_logit = mask_logit
        self.ignore_index = ignore_index
        self.background = background
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> PromptSampler:
        """Build a named protocol from :data:`PRESETS`, with keyword overrides."""
        if name not in PRESETS:
            raise PromptSimulationError(f"unknown prompt preset {name!r}: choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})  # type: ignore[arg-type]

    def __repr__(self) -> str:
        keys = ("mode", "box_jitter", "n_pos", "n_neg", "object_mode", "max_objects", "seed")
        return f"PromptSampler({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"

    def __call__(self, labels: Tensor, *, generator: torch.Generator | None = None) -> tuple[Prompts, Targets]:
        """Prompts and per-prompt target masks for a batch of label maps.

        Args:
            labels: ``[B, H, W]`` long class ids (``ignore_index`` allowed).
            generator: seeded generator (e.g. :func:`eval_generator`); default the
                sampler's own, seeded with ``seed``.

        Returns:
            ``(Prompts, Targets)``. ``Prompts`` holds, as ``mode`` needs, ``boxes [B, N, 4]``
            xyxy, ``points [B, N, P, 2]`` xy + ``point_labels [B, N, P]`` (``P = n_pos +
            n_neg``), ``masks [B, N, 1, mask_size, mask_size]`` logits, and ``valid [B, N]``.
            ``Targets`` holds ``masks [B, N, H, W]`` float (zero in padded slots),
            ``semantic = labels`` (ignore pixels are ``labels == ignore_index``) and
            ``class_ids [B, N]`` (the class of each prompted object, 0 in padded slots).
        """
        if labels.dim() != 3:
            raise PromptSimulationError(f"labels must be [B, H, W], got {list(labels.shape)}")
        g = self._generator if generator is None else generator
        kind = self.mode if self.mode != "mixed" else _KINDS[int(torch.randint(3, (1,), generator=g))]
        extracted = [
            extract_objects(
                lab,
                mode=self.object_mode,
                classes=self.classes,
                ignore_index=self.ignore_index,
                background=self.background,
                min_area=self.min_area,
                max_objects=self.max_objects,
                generator=g,
            )
            for lab in labels
        ]
        objects = [masks for masks, _ in extracted]
        b, (h, w) = labels.shape[0], labels.shape[-2:]
        n = max(1, max(m.shape[0] for m in objects))
        device = labels.device
        valid = torch.zeros(b, n, dtype=torch.bool, device=device)
        target = torch.zeros(b, n, h, w, device=device)
        class_ids = torch.zeros(b, n, dtype=torch.long, device=device)
        prompts = Prompts(valid=valid)
        if kind == "box":
            prompts.boxes = torch.zeros(b, n, 4, device=device)
        elif kind == "points":
            p = self.n_pos + self.n_neg
            prompts.points = torch.zeros(b, n, p, 2, device=device)
            prompts.point_labels = torch.full((b, n, p), -1, dtype=torch.long, device=device)
        else:
            prompts.masks = torch.full((b, n, 1, self.mask_size, self.mask_size), -self.mask_logit, device=device)
        for i, masks in enumerate(objects):
            k = masks.shape[0]
            if k == 0:
                continue
            valid[i, :k] = True
            target[i, :k] = masks.float()
            class_ids[i, :k] = extracted[i][1].to(device)
            self._fill(prompts, kind, i, masks, labels[i], g)
        return prompts, Targets(masks=target, semantic=labels, class_ids=class_ids, ignore_index=self.ignore_index)

    def _fill(self, prompts: Prompts, kind: str, i: int, masks: Tensor, labels: Tensor, g: torch.Generator) -> None:
        """Write image ``i``'s prompts for its ``[k, H, W]`` object masks into ``prompts``."""
        k = masks.shape[0]
        if kind == "box":
            boxes = box_from_mask(masks)
            prompts.boxes[i, :k] = jitter_boxes(boxes, self.box_jitter, g, tuple(labels.shape))  # type: ignore[index]
        elif kind == "points":
            allowed = labels != self.ignore_index
            boxes = box_from_mask(masks).long() if self.neg_in_box else None
            for j in range(k):
                region = allowed
                if boxes is not None:
                    x1, y1, x2, y2 = boxes[j].tolist()
                    region = torch.zeros_like(allowed)
                    region[y1:y2, x1:x2] = allowed[y1:y2, x1:x2]
                pts, lbl = sample_points(masks[j], self.n_pos, self.n_neg, g, neg_region=region)
                prompts.points[i, j] = pts  # type: ignore[index]
                prompts.point_labels[i, j] = lbl  # type: ignore[index]
        else:
            for j in range(k):
                prompts.masks[i, j] = noisy_mask_prompt(  # type: ignore[index]
                    masks[j], self.mask_size, g, self.mask_sigma, band_width=self.mask_band, logit_value=self.mask_logit
                )


def sample_key(source_id: str, x: int, y: int) -> int:
    """A stable integer naming one image (its source and offset), for per-sample eval seeds."""
    return zlib.crc32(f"{source_id}|{x}|{y}".encode())


def _pad_slots(t: Tensor | None, n: int, fill: float) -> Tensor | None:
    if t is None or t.shape[1] == n:
        return t
    pad = t.new_full((t.shape[0], n - t.shape[1], *t.shape[2:]), fill)
    return torch.cat([t, pad], dim=1)


def stack_prompt_samples(samples: Sequence[tuple[Prompts, Targets]]) -> tuple[Prompts, Targets]:
    """Concatenate single-image ``(Prompts, Targets)`` pairs into one batch, padding the slots.

    Padded slots have ``valid`` False, point labels -1 and zero boxes / masks / targets.
    """
    n = max(p.shape[1] for p, _ in samples)

    def cat(values: list[Tensor | None], fill: float) -> Tensor | None:
        if values[0] is None:
            return None
        return torch.cat([_pad_slots(v, n, fill) for v in values], dim=0)

    ps = [p for p, _ in samples]
    ts = [t for _, t in samples]
    prompts = Prompts(
        boxes=cat([p.boxes for p in ps], 0.0),
        points=cat([p.points for p in ps], 0.0),
        point_labels=cat([p.point_labels for p in ps], -1),
        masks=cat([p.masks for p in ps], 0.0),
        valid=cat([p.valid for p in ps], False),
        kind=cat([p.kind for p in ps], 0),
    )
    targets = Targets(
        masks=cat([t.masks for t in ts], 0.0),
        semantic=torch.cat([t.semantic for t in ts]) if ts[0].semantic is not None else None,
        class_ids=cat([t.class_ids for t in ts], 0),
        ignore_index=ts[0].ignore_index,
    )
    return prompts, targets
