"""Load a task checkpoint for whole-slide inference: the model, its classes and resolution.

The task class comes from :func:`pathseg_core.plugins.resolve_task_class` (a registered
short name or a full class path) and is restored with Lightning's
``load_from_checkpoint``. A checkpoint written by another model class is refused in one
line instead of a page of missing / unexpected keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pathseg_core.contracts import PromptableSegmenter
from pathseg_core.visualize import palette

#: Hyper-parameter names read, in order, for the model's working resolution (µm/px).
MPP_HPARAMS: tuple[str, ...] = ("target_mpp", "mpp")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not belong to the requested model (or is not a task checkpoint)."""


@dataclass
class SegmentModel:
    """A model ready for slide inference.

    Attributes:
        net: the :class:`PromptableSegmenter` (in eval mode, on its device).
        class_names: names indexed by class id (0 = background).
        colors: ``[K, 3]`` uint8 RGB per class id.
        target_mpp: working resolution (µm/px) the model was trained at, or ``None``.
        context_factor: context field of view / patch field of view in training, or ``None``.
        identity: JSON-able description of the weights (for resume signatures).
    """

    net: PromptableSegmenter
    class_names: list[str]
    colors: np.ndarray
    target_mpp: float | None = None
    context_factor: float | None = None
    identity: dict = field(default_factory=dict)

    @property
    def semantic(self) -> bool:
        """Whether the model predicts classes without prompts."""
        return bool(self.net.semantic)


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
    return {"path": str(path.resolve()), "size": stat.st_size, "head_sha256": digest.hexdigest()}


def model_from_task(
    task: torch.nn.Module, identity: dict | None = None, data_hparams: dict | None = None
) -> SegmentModel:
    """Wrap a loaded task (a LightningModule whose ``.model`` is a PromptableSegmenter).

    Class names and colours come from the hyper-parameters ``class_names`` /
    ``class_colors`` (defaults: ``class_<i>``, or ``background`` / ``object`` for a
    promptable model without names, and the default palette). The working resolution is
    the task's ``target_mpp`` / ``mpp``, else the datamodule's ``mpp`` (``data_hparams``,
    as Lightning stores them in the checkpoint); the context factor the datamodule's.
    """
    net = getattr(task, "model", None)
    if not isinstance(net, PromptableSegmenter):
        raise CheckpointMismatchError(
            f"{type(task).__name__} has no .model PromptableSegmenter; pass a pathseg task (--model)"
        )
    hp = dict(getattr(task, "hparams", {}) or {})
    n = int(hp.get("num_classes") or net.num_classes or 2)
    names = hp.get("class_names")
    if names:
        names = [str(v) for v in names]
    elif net.semantic:
        names = [f"class_{i}" for i in range(n)]
    else:
        names = ["background", "object"] + [f"class_{i}" for i in range(2, n)]
    colors = palette(len(names), hp.get("class_colors"))
    if len(colors) < len(names):
        colors = np.concatenate([colors, palette(len(names), None)[len(colors) :]])
    data = dict(data_hparams or {})
    mpp = next((float(v[k]) for v in (hp, data) for k in MPP_HPARAMS if v.get(k)), None)
    context = float(data["context_factor"]) if data.get("context_factor") else None
    ident = {"class": f"{type(task).__module__}.{type(task).__qualname__}", **(identity or {})}
    return SegmentModel(net.eval(), names, colors, mpp, context, ident)


def load_segment_model(model: str, ckpt: str | Path, device: torch.device | str = "cpu") -> SegmentModel:
    """Resolve ``model`` (short name or class path) and restore it from ``ckpt`` on ``device``.

    Raises:
        FileNotFoundError: ``ckpt`` does not exist.
        CheckpointMismatchError: the checkpoint was saved by another model class, or its
            weights do not fit this one.
        pathseg_core.plugins.PluginError: unknown or broken model name.
    """
    from pathseg_core.plugins import resolve_task_class

    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check --ckpt")
    cls = resolve_task_class(model)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one line
        raise CheckpointMismatchError(
            f"checkpoint {path} cannot be read as a torch file ({type(err).__name__})"
        ) from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise CheckpointMismatchError(
            f"checkpoint {path} is not a Lightning checkpoint (no 'state_dict'); check --ckpt"
        )
    saved_path = (raw.get("hyper_parameters") or {}).get("_class_path")
    wanted = f"{cls.__module__}.{cls.__qualname__}"
    if saved_path and saved_path != wanted:
        raise CheckpointMismatchError(
            f"checkpoint {path} was saved by {saved_path}, not --model {model} ({wanted}); pass the model it was trained with"
        )
    try:
        task = cls.load_from_checkpoint(path, map_location=device, weights_only=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit --model {model} ({wanted}): {reason[:200]}; "
            f"pass the model it was trained with"
        ) from None
    data = raw.get("datamodule_hyper_parameters") or {}
    return model_from_task(task.to(device), {"ckpt": _file_identity(path)}, data if isinstance(data, dict) else {})
