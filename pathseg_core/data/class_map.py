"""Map the label codes stored in mask files to the class ids a model trains on.

A :class:`ClassMap` is read from a small JSON file::

    {
      "names": ["background", "tumor"],
      "colors": [[0, 0, 0], [255, 0, 0]],      # optional, one RGB per class
      "map": {"0": 0, "255": 1},                # source code -> target class id
      "ignore": [],                             # source codes -> ignore_index
      "ignore_index": 255,                      # optional, default 255
      "threshold": null,                        # optional: binarise instead of "map"
      "notes": "free text: where the layout comes from"
    }

Several source codes may map to one target id (merging classes). Every value that occurs
in a mask must be listed in ``"map"`` or ``"ignore"``; anything else is an error naming the
mask and the uncovered values, so a silently wrong label layout cannot train.

With ``"threshold": t`` (binary maps only) the mask is binarised instead: values ``> t``
become class 1, the rest class 0 — for lossy (JPEG) masks whose values scatter around 0
and 255.

Shipped maps live in ``pathseg_core/configs/<name>.json`` and are loaded by name with
:func:`load_class_map` (``"ocdc_binary"``, ``"bcss_5class"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from pathseg_core.contracts import IGNORE_INDEX

#: Colours used when a class map gives none (RGB, cycled if there are more classes).
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (145, 30, 180),
    (70, 240, 240),
    (245, 130, 48),
    (240, 50, 230),
    (128, 128, 0),
)

#: Largest source code handled with a lookup table (bigger codes go through ``np.unique``).
_LUT_LIMIT = 1 << 16


class ClassMapError(ValueError):
    """A class map file is malformed, or a mask holds codes the map does not cover."""


@dataclass(frozen=True)
class ClassMap:
    """Source label codes → target class ids ``0 .. num_classes - 1`` (plus ``ignore_index``).

    Attributes:
        names: one name per target class; ``num_classes = len(names)``.
        mapping: source code → target id (several codes may share one id).
        ignore: source codes mapped to ``ignore_index`` (outside ROI, "exclude", …).
        ignore_index: label value losses and metrics skip.
        colors: one RGB triple per class (``DEFAULT_PALETTE``, cycled, when not given).
        threshold: if set, binarise (``value > threshold`` → 1) instead of using ``mapping``.
        source: where the map came from (file path or ``"<binary>"``), used in errors.
        notes: free-text provenance of the layout.
    """

    names: tuple[str, ...]
    mapping: Mapping[int, int] = field(default_factory=dict)
    ignore: tuple[int, ...] = ()
    ignore_index: int = IGNORE_INDEX
    colors: tuple[tuple[int, int, int], ...] = ()
    threshold: int | None = None
    source: str = "<inline>"
    notes: str = ""

    def __post_init__(self) -> None:
        n = len(self.names)
        if n < 1:
            raise ClassMapError(f"class map {self.source} has no class names; give 'names'")
        if self.threshold is None and not self.mapping:
            raise ClassMapError(f"class map {self.source} has an empty 'map'; give source code -> class id pairs")
        if self.threshold is not None and n != 2:
            raise ClassMapError(
                f"class map {self.source} uses 'threshold' but has {n} names; thresholding needs exactly 2"
            )
        bad = sorted({t for t in self.mapping.values() if not 0 <= t < n})
        if bad:
            raise ClassMapError(f"class map {self.source} maps to ids {bad} outside 0..{n - 1}; fix 'map' or 'names'")
        both = sorted(set(self.mapping) & set(self.ignore))
        if both:
            raise ClassMapError(f"class map {self.source} lists codes {both} in both 'map' and 'ignore'; keep one")
        if 0 <= self.ignore_index < n:
            raise ClassMapError(f"class map {self.source} has ignore_index {self.ignore_index} inside 0..{n - 1}")
        if self.colors and len(self.colors) != n:
            raise ClassMapError(
                f"class map {self.source} has {len(self.colors)} colors for {n} names; give one per class"
            )
        if not self.colors:  # frozen dataclass: fill the default palette once
            palette = tuple(DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(n))
            object.__setattr__(self, "colors", palette)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, data: Mapping[str, object], source: str = "<inline>") -> ClassMap:
        """Build from the JSON layout described in the module docstring."""
        unknown = sorted(set(data) - {"names", "colors", "map", "ignore", "ignore_index", "threshold", "notes"})
        if unknown:
            raise ClassMapError(f"class map {source} has unknown keys {unknown}")
        try:
            names = tuple(str(n) for n in data["names"])  # type: ignore[union-attr]
            mapping = {int(k): int(v) for k, v in dict(data.get("map", {})).items()}  # type: ignore[arg-type]
            ignore = tuple(int(v) for v in data.get("ignore", []))  # type: ignore[union-attr]
            colors = tuple(tuple(int(c) for c in rgb) for rgb in data.get("colors", []))  # type: ignore[union-attr]
            threshold = data.get("threshold")
            return cls(
                names=names,
                mapping=mapping,
                ignore=ignore,
                ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),  # type: ignore[arg-type]
                colors=colors,  # type: ignore[arg-type]
                threshold=None if threshold is None else int(threshold),  # type: ignore[arg-type]
                source=source,
                notes=str(data.get("notes", "")),
            )
        except KeyError as err:
            raise ClassMapError(f"class map {source} lacks the key {err}; see pathseg_core.data.class_map") from None
        except (TypeError, ValueError) as err:
            if isinstance(err, ClassMapError):
                raise
            raise ClassMapError(f"class map {source} is malformed ({err}); codes and ids must be integers") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ClassMap:
        """Read a class map JSON file."""
        path = Path(path)
        if not path.is_file():
            raise ClassMapError(
                f"class map file {path} does not exist; give a path or a shipped name ({shipped_names()})"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ClassMapError(f"class map {path} is not valid JSON: {err}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def binary(
        cls,
        threshold: int | None = 127,
        names: Sequence[str] = ("background", "foreground"),
        ignore_index: int = IGNORE_INDEX,
    ) -> ClassMap:
        """Two classes; ``threshold=None`` means exactly ``{0 → 0, 1 → 1, 255 → 1}``."""
        if threshold is None:
            return cls(names=tuple(names), mapping={0: 0, 1: 1, 255: 1}, ignore_index=ignore_index, source="<binary>")
        return cls(names=tuple(names), threshold=threshold, ignore_index=ignore_index, source="<binary>")

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """Number of target classes (``ignore_index`` not counted)."""
        return len(self.names)

    # ------------------------------------------------------------------ mapping
    def apply(self, mask: np.ndarray, name: str = "mask") -> np.ndarray:
        """Map a ``[H, W]`` integer mask of source codes to ``[H, W]`` int64 class ids.

        Args:
            mask: source label codes, any integer dtype (or bool).
            name: what to call the mask in errors (usually its file path).

        Raises:
            ClassMapError: the mask is not 2-D integer, or holds codes the map does not cover.
        """
        if mask.ndim != 2:
            raise ClassMapError(f"{name} has shape {list(mask.shape)}; label masks must be [H, W] single-channel")
        if mask.dtype == bool:
            mask = mask.astype(np.uint8)
        if not np.issubdtype(mask.dtype, np.integer):
            raise ClassMapError(f"{name} has dtype {mask.dtype}; label masks must hold integer codes")
        if self.threshold is not None:
            return (mask > self.threshold).astype(np.int64)
        values, inverse = self._present_values(mask)
        known = {**self.mapping, **dict.fromkeys(self.ignore, self.ignore_index)}
        missing = [int(v) for v in values if int(v) not in known]
        if missing:
            shown = missing[:10] + (["…"] if len(missing) > 10 else [])  # type: ignore[list-item]
            raise ClassMapError(
                f"{name} has values {shown} that the class map {self.source} does not cover; "
                'add them to "map" or "ignore"'
            )
        table = np.array([known[int(v)] for v in values], dtype=np.int64)
        if inverse is None:  # lookup-table path: values are the codes themselves
            lut = np.zeros(int(values.max()) + 1 if len(values) else 1, dtype=np.int64)
            lut[values] = table
            return lut[mask]
        return table[inverse].reshape(mask.shape)

    @staticmethod
    def _present_values(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Sorted codes present in ``mask``; the inverse index only when no LUT is possible."""
        if mask.size and np.issubdtype(mask.dtype, np.unsignedinteger) and int(mask.max()) < _LUT_LIMIT:
            counts = np.bincount(mask.ravel())
            return np.flatnonzero(counts), None
        values, inverse = np.unique(mask, return_inverse=True)
        return values, inverse

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """``[H, W]`` class ids → ``[H, W, 3]`` uint8 RGB (``ignore_index`` pixels stay black)."""
        lut = np.zeros((max(self.num_classes, self.ignore_index + 1), 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return lut[np.clip(labels, 0, len(lut) - 1)]


def shipped_names() -> list[str]:
    """Names of the class maps shipped in ``pathseg_core/configs``."""
    folder = resources.files("pathseg_core") / "configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_class_map(name_or_path: str | Path) -> ClassMap:
    """Load a class map from a JSON path, or by the name of a shipped one (``"ocdc_binary"``)."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return ClassMap.from_json(path)
    if str(name_or_path) in shipped_names():
        shipped = resources.files("pathseg_core") / "configs" / f"{name_or_path}.json"
        with resources.as_file(shipped) as real:
            return ClassMap.from_json(real)
    raise ClassMapError(f"class map {name_or_path!r} is neither a JSON file nor a shipped name ({shipped_names()})")
