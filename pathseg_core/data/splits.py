"""Train / validation / test splits that never leak one slide or one region across splits.

Two strategies:

* **by group** (:func:`split_by_group`): a regex pulls a group key (slide id, ROI name)
  out of every file stem and whole groups go to one split, so overlapping or
  neighbouring tiles of one region stay together.
* **spatial** (:func:`spatial_split`): for data from a *single* group (one slide, one
  strip), tiles are laid out by their position (grid ``r<row>c<col>`` or pixel offsets
  taken from the name) and cut into bands along one axis; any training tile closer than
  ``gap`` pixels to a held-out tile is dropped, so no held-out tile overlaps or touches a
  training tile.

Split files (:func:`read_split_file`) list one stem per line; :func:`check_no_leak`
verifies any assignment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np


class SplitError(ValueError):
    """A split cannot be made as asked (pattern does not match, too few groups, …)."""


class SplitLeakError(SplitError):
    """The same stem, group or overlapping region appears in two splits."""


# ---------------------------------------------------------------------- group splits
def _compile_one_group(pattern: str) -> re.Pattern[str]:
    regex = re.compile(pattern)
    if regex.groups != 1:
        raise SplitError(f"group pattern {pattern!r} has {regex.groups} groups; it needs exactly one, e.g. r'^(\\d+)_'")
    return regex


def group_key(stem: str, pattern: str) -> str:
    r"""The group a file stem belongs to: the one capture group of ``pattern`` (``re.search``).

    Example: ``group_key("1009009_r27c10", r"^(\\d+)_") == "1009009"``.
    """
    match = _compile_one_group(pattern).search(stem)
    if match is None:
        raise SplitError(f"stem {stem!r} does not match the group pattern {pattern!r}; fix the pattern or the name")
    return match.group(1)


def proportional_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Integer counts summing to ``n``, proportional to ``fractions`` (largest remainder).

    Every split with a positive share gets at least one item (taken from the largest);
    :class:`SplitError` if ``n`` is too small for that.
    """
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise SplitError(f"split fractions {dict(fractions)} must be non-negative and not all zero")
    exact = {k: n * f / total for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[k] += 1
    # every split asked for gets at least one item, taken from the largest
    for k, f in fractions.items():
        if f > 0 and counts[k] == 0:
            donor = max(counts, key=counts.get)  # type: ignore[arg-type]
            if counts[donor] <= 1:
                raise SplitError(f"{n} items cannot fill the splits {list(fractions)}; use fewer splits or more data")
            counts[donor] -= 1
            counts[k] += 1
    return counts


def split_by_group(
    stems: Iterable[str],
    pattern: str,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assign whole groups to splits at random (seeded), in proportion to ``fractions``.

    Args:
        stems: file stems (names without suffix).
        pattern: regex with one capture group giving the group key (see :func:`group_key`).
        fractions: split name → share of the *groups* (default ``{"train": .8, "val": .2}``);
            splits with share 0 come back empty.
        seed: seeds the ``numpy.random.Generator`` that shuffles the groups.

    Returns:
        split name → sorted stems, every key of ``fractions`` present.

    Raises:
        SplitError: fewer groups than non-empty splits (e.g. one slide: use
            :func:`spatial_split` instead).
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.2})
    groups: dict[str, list[str]] = {}
    for stem in stems:
        groups.setdefault(group_key(stem, pattern), []).append(stem)
    wanted = {k: f for k, f in fractions.items() if f > 0}
    if len(groups) < len(wanted):
        raise SplitError(
            f"only {len(groups)} group(s) {sorted(groups)[:5]} for the {len(wanted)} splits {list(wanted)} "
            f"(pattern {pattern!r}); use a spatial split or split files"
        )
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    out: dict[str, list[str]] = {k: [] for k in fractions}
    start = 0
    for name, count in proportional_counts(len(order), wanted).items():
        for key in order[start : start + count]:
            out[name].extend(groups[key])
        start += count
    return {k: sorted(v) for k, v in out.items()}


def read_split_file(path: str | Path) -> list[str]:
    """Stems listed one per line; blank lines and ``#`` comments (whole-line or trailing) are skipped."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split file {path} does not exist; give one stem per line")
    stems = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [s for s in stems if s]


def check_no_leak(splits: Mapping[str, Sequence[str]], pattern: str | None = None) -> None:
    """Raise :class:`SplitLeakError` if a stem, or a group (``pattern``), sits in two splits."""
    seen: dict[str, str] = {}
    for name, stems in splits.items():
        for stem in stems:
            key = stem if pattern is None else group_key(stem, pattern)
            other = seen.setdefault(key, name)
            if other != name:
                what = "stem" if pattern is None else f"group (pattern {pattern!r})"
                raise SplitLeakError(f"{what} {key!r} is in both the {other!r} and {name!r} splits; move it to one")


# ---------------------------------------------------------------------- spatial splits
@dataclass(frozen=True)
class TileBox:
    """Where a tile lies in its source, in pixels: ``x``, ``y`` top-left, ``w``, ``h`` size.

    The box covers columns ``[x, x + w)`` and rows ``[y, y + h)``.
    """

    stem: str
    x: int
    y: int
    w: int
    h: int

    def gap_to(self, other: TileBox) -> int:
        """Pixels of clearance between two boxes: ``< 0`` overlap, ``0`` touch (edge or corner)."""
        gap_x = max(other.x - (self.x + self.w), self.x - (other.x + other.w))
        gap_y = max(other.y - (self.y + self.h), self.y - (other.y + other.h))
        return max(gap_x, gap_y)


def tile_boxes(stems: Iterable[str], pattern: str, tile_size: int | tuple[int, int]) -> list[TileBox]:
    r"""Place tiles from their names.

    Args:
        stems: file stems.
        pattern: regex with named groups: ``row`` / ``col`` (grid cells of one tile size,
            e.g. ``r"r(?P<row>\\d+)c(?P<col>\\d+)$"``) or ``x`` / ``y`` (pixel offsets, e.g.
            ``r"-(?P<x>\\d+)$"``). A missing coordinate is 0.
        tile_size: ``(h, w)`` in pixels, or one int for square tiles.
    """
    regex = re.compile(pattern)
    names = set(regex.groupindex)
    if not names or not names <= {"row", "col", "x", "y"} or (names & {"row", "col"} and names & {"x", "y"}):
        raise SplitError(
            f"position pattern {pattern!r} needs named groups row/col or x/y, e.g. r'r(?P<row>\\d+)c(?P<col>\\d+)$'"
        )
    h, w = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    boxes = []
    for stem in stems:
        match = regex.search(stem)
        if match is None:
            raise SplitError(
                f"stem {stem!r} does not match the position pattern {pattern!r}; fix the pattern or the name"
            )
        found = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        if names & {"row", "col"}:
            boxes.append(TileBox(stem, found.get("col", 0) * w, found.get("row", 0) * h, w, h))
        else:
            boxes.append(TileBox(stem, found.get("x", 0), found.get("y", 0), w, h))
    return boxes


@dataclass(frozen=True)
class SpatialSplit:
    """Result of :func:`spatial_split`: split name → stems, and the stems dropped as guard."""

    splits: dict[str, list[str]]
    dropped: list[str]


def spatial_split(
    boxes: Sequence[TileBox],
    fractions: Mapping[str, float],
    axis: Literal["y", "x"] = "y",
    gap: int = 1,
) -> SpatialSplit:
    """Cut tiles of one source into bands along ``axis`` with a guard gap between splits.

    Tiles are sorted by their coordinate along ``axis``; tiles sharing a coordinate (one
    grid row) stay together. Bands are laid out in the order of ``fractions`` (e.g.
    train, val, test: held-out tiles at the far end); the later splits are filled first,
    from the far end, with whole bands until they reach their share of the tile count,
    and the first split takes the rest. Then every
    pair of tiles in different splits closer than ``gap`` pixels (see
    :meth:`TileBox.gap_to`; ``gap=1`` forbids overlap and touching, corners included)
    is resolved by dropping the tile of the split listed *earlier* in ``fractions``, so
    held-out splits keep their tiles and training gives them up.

    Raises:
        SplitError: fewer distinct positions than non-empty splits, or a split left empty
            by the guard.
    """
    if axis not in ("y", "x"):
        raise SplitError(f"axis must be 'y' or 'x', got {axis!r}")
    wanted = {k: f for k, f in fractions.items() if f > 0}
    bands: dict[int, list[TileBox]] = {}
    for box in boxes:
        bands.setdefault(box.y if axis == "y" else box.x, []).append(box)
    coords = sorted(bands)
    if len(coords) < len(wanted):
        raise SplitError(
            f"only {len(coords)} distinct {axis} position(s) for the splits {list(wanted)}; use fewer splits"
        )
    targets = proportional_counts(len(boxes), wanted)
    names = list(wanted)
    assign: dict[str, str] = {}
    end = len(coords)  # bands [end:] are taken; fill from the far end, first split takes the rest
    for j in range(len(names) - 1, -1, -1):
        taken = 0
        while end > j and (j == 0 or taken < targets[names[j]]):
            end -= 1
            for box in bands[coords[end]]:
                assign[box.stem] = names[j]
            taken += len(bands[coords[end]])
    rank = {name: r for r, name in enumerate(names)}
    dropped: set[str] = set()
    ordered = sorted(boxes, key=lambda b: (rank[assign[b.stem]], b.stem), reverse=True)  # held-out first
    for a_idx, a in enumerate(ordered):
        if a.stem in dropped:
            continue
        for b in ordered[a_idx + 1 :]:
            if b.stem not in dropped and assign[a.stem] != assign[b.stem] and a.gap_to(b) < gap:
                dropped.add(b.stem)  # b's split comes earlier in `fractions`
    out: dict[str, list[str]] = {k: [] for k in fractions}
    for box in boxes:
        if box.stem not in dropped:
            out[assign[box.stem]].append(box.stem)
    empty = [k for k in wanted if not out[k]]
    if empty:
        raise SplitError(f"the guard gap of {gap} px left the splits {empty} empty; lower the gap or add tiles")
    return SpatialSplit({k: sorted(v) for k, v in out.items()}, sorted(dropped))


def check_spatial_gap(boxes: Sequence[TileBox], splits: Mapping[str, Sequence[str]], gap: int = 1) -> None:
    """Raise :class:`SplitLeakError` if tiles of two different splits are closer than ``gap`` pixels."""
    where = {stem: name for name, stems in splits.items() for stem in stems}
    placed = [b for b in boxes if b.stem in where]
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            if where[a.stem] != where[b.stem] and a.gap_to(b) < gap:
                raise SplitLeakError(
                    f"tiles {a.stem!r} ({where[a.stem]}) and {b.stem!r} ({where[b.stem]}) are {a.gap_to(b)} px apart, "
                    f"closer than the {gap} px guard"
                )
