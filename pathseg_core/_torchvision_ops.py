"""Make ``import torchvision`` work when its compiled ops cannot load.

The package registry only serves CUDA builds of torchvision. Next to the CPU build
of torch, ``torchvision/_C.so`` fails to load, and torchvision's own meta
registrations then raise ``operator torchvision::nms does not exist`` at import —
which takes ``lightning``, ``torchmetrics`` and ``segment_anything`` down with it.

:func:`install` puts a tiny import hook in ``sys.meta_path``. The first time
``torchvision`` is imported the hook tries to load the real ``_C`` library; only if
that fails does it define ``torchvision::nms`` / ``torchvision::qnms`` with a pure
torch CPU kernel. Nothing is imported at interpreter start-up (the venv's ``.pth``
file only calls :func:`install`), so plain ``python`` stays fast.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_state: dict[str, object] = {"done": False, "fallback": False}


def nms_reference(dets, scores, iou_threshold: float):  # noqa: ANN001, ANN201 - torch types resolved lazily
    """Greedy non-maximum suppression on ``dets [N,4]`` (xyxy); returns kept indices, best first."""
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.float().unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _compiled_ops_load(spec) -> bool:  # noqa: ANN001
    import torch

    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision at all: nothing to patch
    for folder in spec.submodule_search_locations:
        for lib in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def define_fallback_ops() -> None:
    """Define ``torchvision::nms`` and ``torchvision::qnms`` with the pure-torch kernel."""
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
    lib.define("nms" + _SCHEMA)
    lib.define("qnms" + _SCHEMA)
    lib.impl("nms", nms_reference, "CPU")
    _state["library"] = lib
    _state["fallback"] = True


def ensure_torchvision_ops() -> None:
    """Run the check once: load torchvision's ops, or define the fallback ones."""
    if _state["done"]:
        return
    _state["done"] = True
    spec = importlib.util.find_spec("torchvision")
    if not _compiled_ops_load(spec):
        define_fallback_ops()


def using_fallback() -> bool:
    """Whether the pure-torch fallback ops were defined in this process."""
    return bool(_state["fallback"])


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name == "torchvision":
            sys.meta_path.remove(self)
            ensure_torchvision_ops()
        return None  # let the normal finders import it


def install() -> None:
    """Arm the hook (idempotent); called from the venv's ``.pth`` file and from ``pathseg_core``."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


PTH_NAME = "zz_pathseg_torchvision_ops.pth"  # sorts after the editable-install .pth files


def install_pth() -> str:
    """Write the venv ``.pth`` that arms the hook at start-up, only if the compiled ops fail to load."""
    import sysconfig

    target = Path(sysconfig.get_paths()["purelib"])
    pth = target / PTH_NAME
    spec = importlib.util.find_spec("torchvision")
    if _compiled_ops_load(spec):
        if pth.exists():
            pth.unlink()
        return "torchvision's compiled ops load: no fallback needed"
    pth.write_text("import pathseg_core._torchvision_ops as _p; _p.install()\n")
    return f"torchvision's compiled ops cannot load here: fallback nms/qnms armed via {pth}"

