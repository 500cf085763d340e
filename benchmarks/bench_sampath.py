"""Prediction time per image: SAM-Path against the ``sam`` baseline, in the same run.

Both models are random-initialised at full size (SAM ViT-B; SAM-Path adds HIPT ViT-S/16, the
new neck and class tokens) — timing does not depend on weight values. One "prediction" is
``decode(encode(image))`` on a ``size x size`` RGB image: SAM with one box prompt, SAM-Path with
its class tokens (no prompt). Run: ``python benchmarks/bench_sampath.py [--sam vit_b] [--size 1024]``.
The paper's supplementary table gives ≈ 0.29 s per image for SAM-Path on a GPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from pathseg_sampath.model import SamPathSegmenter

import pathseg_core  # noqa: F401 - arms the torchvision CPU fallback before segment_anything
from pathseg_core.contracts import Prompts
from pathseg_core.models.sam import SamSegmenter


def _time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(
    sam: str = "vit_b",
    hipt: str = "vit_s16",
    size: int = 1024,
    num_classes: int = 5,
    repeats: int = 3,
    warmup: int = 1,
    device: str | None = None,
) -> dict[str, float]:
    """Time both models, print one ratio line, and return the numbers.

    Args:
        sam: SAM configuration (``vit_b`` as in the paper; ``tiny`` for a smoke run).
        hipt: HIPT configuration (``vit_s16``; ``tiny`` with ``sam="tiny"``).
        size: image side in pixels.
        num_classes: SAM-Path class tokens.
        repeats: timed calls (the median is reported).
        warmup: untimed calls first.
        device: ``cpu`` / ``cuda`` (default: cuda if available).

    Returns:
        ``{"sam_s": …, "sampath_s": …, "ratio": sampath_s / sam_s, "size": size}``.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    baseline = SamSegmenter.from_config(sam).to(dev).eval()
    sampath = SamPathSegmenter.build(num_classes, sam=sam, hipt=hipt).to(dev).eval()
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, size, size, generator=g) * 255).to(dev)
    box = Prompts(boxes=torch.tensor([[[size * 0.25, size * 0.25, size * 0.75, size * 0.75]]], device=dev))
    with torch.inference_mode():
        t_sam = _time(lambda: baseline(image, box), repeats, warmup, dev)
        t_sp = _time(lambda: sampath(image), repeats, warmup, dev)
    out = {"sam_s": t_sam, "sampath_s": t_sp, "ratio": t_sp / t_sam, "size": float(size)}
    print(
        f"sampath vs sam ({sam}, {size}x{size}, {dev.type}): {t_sp:.3f} s / {t_sam:.3f} s per image "
        f"= ratio {t_sp / t_sam:.2f}"
    )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit_b")
    parser.add_argument("--hipt", default="vit_s16")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    a = parser.parse_args()
    main(sam=a.sam, hipt=a.hipt, size=a.size, repeats=a.repeats, device=a.device)
