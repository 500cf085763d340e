"""Load model weights by path: safe reading, explicit key mapping, one-line fit checks.

Three steps, each usable alone:

1. :func:`load_state_dict` reads a file with ``weights_only=True`` (no arbitrary code runs)
   and unwraps the usual containers (``{"model": sd}`` as SAM2 ships,
   ``{"state_dict": sd}`` as Lightning saves).
2. :func:`map_keys` renames keys by ordered prefix rules; a key that no rule covers is an
   error, so nothing is kept or dropped silently.
3. :func:`load_into` checks the result against ``module.state_dict()`` (missing,
   unexpected, shape mismatches) and reports all problems in one line before loading.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["CheckpointError", "load_state_dict", "map_keys", "load_into"]

#: Container keys tried, in order, when a checkpoint holds a state dict one level down.
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model")
#: How many example keys an error message lists per category.
_SHOW = 3


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys / shapes do not fit the model."""


def _first(items: Sequence[str], n: int = _SHOW) -> str:
    """``"a, b, c, …"``: the first ``n`` items, with an ellipsis when there are more."""
    shown = ", ".join(items[:n])
    return shown + (", …" if len(items) > n else "")


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _refused_globals(message: str) -> list[str]:
    """Names of the Python globals ``weights_only=True`` refused, taken from torch's message."""
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))


def _read(path: Path) -> object:
    """``torch.load`` with one-line errors for unreadable or unsafe files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = _refused_globals(str(err))
        if names:
            raise CheckpointError(
                f"checkpoint {path} refused by weights_only=True: it contains arbitrary Python objects "
                f"({', '.join(names)}); re-save it as a plain state dict (torch.save(model.state_dict(), path))"
            ) from None
        raise CheckpointError(f"checkpoint {path} cannot be read by torch.load: not a torch checkpoint") from None
    except Exception as err:  # noqa: BLE001 - garbage bytes can make the unpickler raise anything
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read by torch.load ({reason}); is it a torch file?"
        ) from None


def _unwrap(obj: object, path: Path, subkey: str | None) -> object:
    """The state dict inside a container, by ``subkey`` or by :data:`CONTAINER_KEYS`."""
    if subkey is not None:
        if not isinstance(obj, Mapping) or subkey not in obj:
            keys = list(obj) if isinstance(obj, Mapping) else []
            raise CheckpointError(
                f"checkpoint {path} has no key {subkey!r} (top-level keys: {_first([str(k) for k in keys], 8) or 'none'})"
            )
        return obj[subkey]
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def load_state_dict(path: str | Path, *, subkey: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from ``path`` on the CPU, safely (``weights_only=True``).

    Args:
        path: a file written by ``torch.save``.
        subkey: take the state dict from this top-level key. By default a mapping of
            tensors is used as is; otherwise the first of :data:`CONTAINER_KEYS` that holds
            a mapping is used (``"state_dict"``: Lightning, ``"model"``: SAM2).

    Returns:
        ``{name: tensor}`` in the file's order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file cannot be read, holds arbitrary Python objects, or is not
            a mapping of ``str`` to ``Tensor``.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}; pass the path of a .pth/.pt/.ckpt file")
    sd = _unwrap(_read(path), path, subkey)
    if not isinstance(sd, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(sd).__name__}, not a state dict (a mapping of str to Tensor)"
        )
    bad = [str(k) for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        hint = "" if subkey else f"; pass subkey= to pick the state dict (keys: {_first(bad, 8)})"
        raise CheckpointError(
            f"checkpoint {path} is not a state dict: {len(bad)} entries are not str -> Tensor ({_first(bad)}){hint}"
        )
    return dict(sd)


def map_keys(
    sd: Mapping[str, Tensor],
    rules: Sequence[tuple[str, str]],
    *,
    drop: Sequence[str] = (),
) -> dict[str, Tensor]:
    """Rename state-dict keys by prefix rules; every key must be covered by a rule or a drop.

    Each key is first checked against ``drop`` (prefixes removed on purpose), then against
    ``rules`` in order; the first ``(prefix_from, prefix_to)`` whose ``prefix_from`` starts
    the key replaces that prefix with ``prefix_to``. ``("", "")`` keeps everything left.

    Args:
        sd: the checkpoint's state dict.
        rules: ordered ``(prefix_from, prefix_to)`` pairs.
        drop: prefixes of keys to leave out.

    Returns:
        A new dict with renamed keys (tensors are not copied).

    Raises:
        CheckpointError: some keys match no rule and no drop prefix, or two keys map to
            the same new name.
    """
    out: dict[str, Tensor] = {}
    unmatched: list[str] = []
    sources: dict[str, str] = {}
    for key, value in sd.items():
        if any(key.startswith(p) for p in drop):
            continue
        rule = next(((src, dst) for src, dst in rules if key.startswith(src)), None)
        if rule is None:
            unmatched.append(key)
            continue
        new = rule[1] + key[len(rule[0]) :]
        if new in out:
            raise CheckpointError(
                f"key mapping sends both {sources[new]!r} and {key!r} to {new!r}; make the rules disjoint"
            )
        out[new] = value
        sources[new] = key
    if unmatched:
        raise CheckpointError(
            f"{len(unmatched)} checkpoint keys match no mapping rule ({_first(unmatched)}); "
            "add a (prefix_from, prefix_to) rule or a drop prefix for them"
        )
    return out


def _shape(t: Tensor) -> str:
    return "[" + ",".join(str(s) for s in t.shape) + "]"


def load_into(
    module: nn.Module,
    sd: Mapping[str, Tensor],
    *,
    strict: bool = True,
    source: str | Path | None = None,
) -> list[str]:
    """Load ``sd`` into ``module`` after checking that every key and shape fits.

    Args:
        module: the model to fill (in place).
        sd: a state dict whose keys already follow ``module.state_dict()`` (see
            :func:`map_keys`).
        strict: if true, a key of the module that ``sd`` lacks is an error; if false such
            keys keep their initial values (e.g. a new decoder head on a pretrained
            encoder). Unexpected keys and shape mismatches are always errors.
        source: where ``sd`` came from, quoted in the error message.

    Returns:
        The module keys ``sd`` did not provide (empty when ``strict``).

    Raises:
        CheckpointError: one line with the counts and first few missing keys, unexpected
            keys and shape mismatches.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: ckpt {_shape(v)} vs model {_shape(own[k])}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = []
    if missing and strict:
        problems.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_first(mismatched, 2)})")
    if problems:
        where = f" {source}" if source is not None else ""
        raise CheckpointError(f"checkpoint{where} does not fit {type(module).__name__}: " + ", ".join(problems))
    module.load_state_dict(dict(sd), strict=False)
    return missing
