"""``pathseg segment``: whole-slide inference to a pyramidal TIFF, a QuPath GeoJSON and an overlay.

Example::

    pathseg segment slides/*.svs --model sam --ckpt last.ckpt --out results/ --prompts boxes/

Each slide is independent: one that fails prints ``pathseg: error: <slide>: <reason>``
and the others still run; the exit code is 0 when all succeeded, 1 when any slide
failed, 2 for bad arguments or a model that cannot be loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pathseg_core import _torchvision_ops  # noqa: F401 - arms the torchvision fix first

EXIT_SLIDE_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pathseg segment``."""
    p = argparse.ArgumentParser(
        prog="pathseg segment",
        description="Segment whole slides: lossless pyramidal TIFF of class ids, QuPath GeoJSON, overlay PNG.",
        epilog="Environment: PATHSEG_MMAP_THRESHOLD_MB (default 4; 0 keeps glibc's default) bounds heap growth "
        "over long runs, see pathseg_core/inference/memory.py.",
    )
    p.add_argument("slides", nargs="+", type=Path, metavar="SLIDE", help="slide files (SVS, NDPI, tiled TIFF …)")
    p.add_argument("--model", required=True, help="registered model name (e.g. sam) or full task class path")
    p.add_argument("--ckpt", required=True, type=Path, help="Lightning checkpoint of that model")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--prompts",
        type=Path,
        help="QuPath GeoJSON of boxes / points (promptable models), or a folder of <slide>.geojson",
    )
    p.add_argument("--mpp", type=float, help="µm per level-0 pixel, overriding the slide's metadata")
    p.add_argument("--target-mpp", type=float, help="working resolution (default: the checkpoint's, else 1.0)")
    p.add_argument("--tile-size", type=int, default=512, help="model input side in pixels (default 512)")
    p.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring tiles (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--precision", choices=("32", "bf16"), default="32", help="float32 or bf16 autocast")
    p.add_argument(
        "--tissue-threshold", type=float, default=0.05, help="least tissue fraction of a tile (default 0.05)"
    )
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading tiles (default 0)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run (finished slides are skipped)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _error(message: str) -> None:
    print(f"pathseg: error: {' '.join(str(message).split())}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"pathseg: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _is_user_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith("pathseg") or isinstance(exc, (ValueError, OSError))


def _describe(exc: BaseException) -> str:
    if os.environ.get("PATHSEG_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if _is_user_error(exc):
        return text
    return f"{type(exc).__name__}: {text} (internal error; set PATHSEG_DEBUG=1 for the traceback)"


def resolve_device(name: str) -> object:
    """``torch.device`` for ``--device`` (``auto``: CUDA when available)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return device


def prompts_for(slide: Path, prompts: Path | None) -> Path | None:
    """The prompt file of ``slide``: ``--prompts`` itself, or ``<folder>/<slide stem>.geojson``."""
    if prompts is None:
        return None
    return prompts / f"{slide.stem}.geojson" if prompts.is_dir() else prompts


class RichProgress:
    """Progress bar with tiles/s for :class:`~pathseg_core.inference.engine.SlideSegmenter`."""

    def __init__(self, disable: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=disable,
        )
        self.task: int | None = None

    def start(self, name: str, total: int) -> None:
        """Add a bar for a slide."""
        self.progress.start()
        self.task = self.progress.add_task(name, total=max(total, 1), rate="")

    def advance(self, n: int) -> None:
        """Advance the current bar."""
        if self.task is not None:
            self.progress.advance(self.task, n)
            speed = self.progress.tasks[-1].speed
            self.progress.update(self.task, rate=f"{speed:.1f} tiles/s" if speed else "")

    def finish(self) -> None:
        """Stop drawing; the finished bar stays on screen, the next slide gets a fresh one."""
        self.progress.stop()
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def main(argv: list[str] | None = None) -> int:
    """Run ``pathseg segment``; returns the exit code (0 ok, 1 a slide failed, 2 usage / model error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE

    from pathseg_core.inference.engine import SegmentOptions, SlideSegmenter, ensure_writable
    from pathseg_core.inference.loading import load_segment_model
    from pathseg_core.inference.memory import bound_heap_growth

    try:
        bound_heap_growth()
        options = SegmentOptions(
            tile_size=args.tile_size,
            overlap=args.overlap,
            target_mpp=args.target_mpp,
            mpp=args.mpp,
            tissue_threshold=args.tissue_threshold,
            precision=args.precision,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        names = [s.stem for s in args.slides]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"several slides are named {', '.join(dupes)}; their outputs would collide in {args.out}")
        if args.prompts is not None and not args.prompts.is_dir() and len(args.slides) > 1:
            raise ValueError(
                f"--prompts {args.prompts} is one file but {len(args.slides)} slides were given; "
                f"pass a folder of <slide>.geojson"
            )
        ensure_writable(args.out)
        device = resolve_device(args.device)
        model = load_segment_model(args.model, args.ckpt, device)
    except Exception as exc:  # noqa: BLE001 - one line for any setup failure
        _error(_describe(exc))
        return EXIT_USAGE

    progress = RichProgress(disable=args.quiet)
    segmenter = SlideSegmenter(model, options, device=device, progress=progress)
    failed = 0
    for slide in args.slides:
        try:
            result = segmenter.segment(
                slide,
                args.out,
                prompts=prompts_for(slide, args.prompts),
                overwrite=args.overwrite,
                resume=args.resume,
            )
        except Exception as exc:  # noqa: BLE001 - one slide's failure must not stop the others
            failed += 1
            message = _describe(exc)
            _error(message if str(slide) in message else f"{slide}: {message}")
            continue
        for warning in result.warnings:
            _warn(warning)
        if result.status == "done":
            note = f" (resumed after {result.resumed_bands} finished bands)" if result.resumed_bands else ""
            print(f"{slide.name}: {result.tiles} tiles → {result.outputs.mask}{note}", file=sys.stderr)
    return EXIT_SLIDE_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
