"""Parameter-efficient fine-tuning helpers: LoRA via ``peft``, freezing, trainable-parameter reports.

"Trainable" always means ``requires_grad``. Patterns are :mod:`fnmatch` globs over
parameter names as ``named_parameters()`` spells them (e.g. ``"mask_decoder.*"``,
``"*lora_*"``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fnmatch import fnmatchcase

import peft
from rich.console import Console
from rich.table import Table
from torch import nn

__all__ = [
    "AdapterError",
    "apply_lora",
    "count_parameters",
    "format_report",
    "freeze",
    "trainable_report",
    "unfreeze",
]


class AdapterError(ValueError):
    """A LoRA target or a freeze pattern that matches nothing in the module."""


def apply_lora(
    module: nn.Module,
    target_modules: Sequence[str] | str,
    r: int = 4,
    alpha: float = 8,
    dropout: float = 0.0,
) -> nn.Module:
    """Inject LoRA adapters (``peft.inject_adapter_in_model``) into ``module``, in place.

    Each adapted ``nn.Linear(in, out)`` gains ``r * (in + out)`` trainable parameters
    (``lora_A [r, in]``, ``lora_B [out, r]``; ``B`` starts at zero so the output is
    unchanged); its output becomes ``W x + (alpha / r) B A x``. Like peft, this freezes
    every other parameter of ``module`` (apply it to a sub-module, e.g. the image encoder,
    to leave the rest as it was). Adapted layers' weights move to ``<name>.base_layer.*``,
    so load pretrained weights before calling this.

    Args:
        module: model to adapt.
        target_modules: peft's matching: a list of names, each matching a module whose
            dotted name equals it or ends with ``"." + name`` (SAM's ViT attention:
            ``["attn.qkv", "attn.proj"]``; plain ``"proj"`` would also hit the patch
            embedding convolution); or one string, a regular expression that must match
            the full dotted name.
        r: adapter rank.
        alpha: LoRA scaling numerator.
        dropout: dropout on the adapter input.

    Returns:
        ``module`` itself.

    Raises:
        AdapterError: no module matched ``target_modules``.
    """
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = peft.LoraConfig(target_modules=targets, r=r, lora_alpha=alpha, lora_dropout=dropout)
    try:
        return peft.inject_adapter_in_model(config, module)
    except ValueError as err:
        if "not found in the base model" not in str(err):
            raise
        raise AdapterError(
            f"LoRA target_modules {targets!r} match no module of {type(module).__name__}; "
            "list names as in named_modules(), e.g. 'attn.qkv'"
        ) from None


def _matching(module: nn.Module, patterns: Sequence[str]) -> tuple[list[nn.Parameter], list[str]]:
    """Parameters whose names match any pattern, and the patterns that matched nothing."""
    params, used = [], set()
    for name, p in module.named_parameters():
        hits = [pat for pat in patterns if fnmatchcase(name, pat)]
        if hits:
            params.append(p)
            used.update(hits)
    return params, [pat for pat in patterns if pat not in used]


def freeze(module: nn.Module, *, except_patterns: Sequence[str] = ()) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter except those matching ``except_patterns``.

    The excepted parameters are made trainable. Returns ``module``; raises
    :class:`AdapterError` if a pattern matches no parameter (a typo would otherwise
    silently freeze everything).
    """
    keep, unused = _matching(module, list(except_patterns))
    if unused:
        raise AdapterError(f"freeze: except_patterns {unused} match no parameter of {type(module).__name__}")
    keep_ids = {id(p) for p in keep}
    for p in module.parameters():
        p.requires_grad_(id(p) in keep_ids)
    return module


def unfreeze(module: nn.Module, patterns: Sequence[str] | None = None) -> nn.Module:
    """Set ``requires_grad=True`` on all parameters, or only on those matching ``patterns``.

    Others keep their current state. Returns ``module``; raises :class:`AdapterError` if a
    pattern matches no parameter.
    """
    if patterns is None:
        chosen = list(module.parameters())
    else:
        chosen, unused = _matching(module, list(patterns))
        if unused:
            raise AdapterError(f"unfreeze: patterns {unused} match no parameter of {type(module).__name__}")
    for p in chosen:
        p.requires_grad_(True)
    return module


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def trainable_report(module: nn.Module, depth: int = 1) -> list[tuple[str, int, int]]:
    """``(name, trainable, total)`` element counts grouped by the first ``depth`` parts of parameter names.

    ``depth=1`` gives one row per direct child (or direct parameter); rows appear in
    registration order and their totals add up to :func:`count_parameters`.
    """
    if depth < 1:
        raise ValueError(f"trainable_report: depth must be >= 1, got {depth}")
    rows: dict[str, list[int]] = {}
    for name, p in module.named_parameters():
        row = rows.setdefault(".".join(name.split(".")[:depth]), [0, 0])
        row[1] += p.numel()
        if p.requires_grad:
            row[0] += p.numel()
    return [(name, trainable, total) for name, (trainable, total) in rows.items()]


def format_report(module: nn.Module, depth: int = 1, *, title: str | None = None) -> str:
    """:func:`trainable_report` as a plain-text table with a total row and trainable percentages."""
    rows = trainable_report(module, depth)
    table = Table(title=title or f"{type(module).__name__} parameters")
    for header in ("module", "trainable", "total", "%"):
        table.add_column(header, justify="left" if header == "module" else "right")

    def pct(t: int, n: int) -> str:
        return f"{100 * t / n:.2f}" if n else "-"

    for name, trainable, total in rows:
        table.add_row(name, f"{trainable:,}", f"{total:,}", pct(trainable, total))
    trainable = sum(r[1] for r in rows)
    total = sum(r[2] for r in rows)
    table.add_section()
    table.add_row("total", f"{trainable:,}", f"{total:,}", pct(trainable, total))
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, force_terminal=False).print(table)
    return buffer.getvalue()
