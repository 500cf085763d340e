"""Exceptions raised by the whole-slide layer; each carries one line: what, where, what to do."""

from __future__ import annotations


class SlideNotFoundError(FileNotFoundError):
    """The slide (or label mask) path does not exist."""


class SlideFormatError(ValueError):
    """The file is not a slide either backend can read, or it is truncated / corrupt."""


class MppMissingError(ValueError):
    """A request needs physical resolution (µm/px) but the slide has none and no override was given."""


class ResolutionError(ValueError):
    """A requested resolution cannot be served (e.g. finer than the slide's level 0)."""


class AnnotationError(ValueError):
    """An annotation file is malformed, uses unknown classes, or does not fit the slide."""


class NoForegroundError(ValueError):
    """A sampler found no patch with enough tissue within its attempt budget."""


class AnnotationNotFoundError(FileNotFoundError):
    """The annotation file (GeoJSON or label mask) does not exist."""
