"""Whole-slide inference benchmarks: ``pathseg segment`` vs MONAI, memory vs slide area, reader overhead.

Three measurements, each against a baseline taken in the same run:

1. **Throughput and peak RSS** of ``pathseg segment`` (the CLI's ``main`` in a fresh
   process) vs MONAI's ``sliding_window_inference`` over the same slide region read whole
   into memory, with the same checkpoint wrapped as a predictor, the same tile size,
   overlap, batch size and precision. Windows are counted from the runs themselves
   (pathseg's "N tiles" line; MONAI's predictor calls). The floor comparison uses
   ``--tissue-threshold 0`` (every window, as MONAI); the default run's tissue skipping
   is reported as a separate speedup.
2. **Peak RSS vs slide area**: ``pathseg segment`` (default settings) on the real CMU
   slide and on pyramids that repeat it 2×2 and 4×4 times
   (:func:`pathseg_core.testing.fixtures.make_tiled_slide`, written under ``--out``).
3. **Reader overhead**: :meth:`SlideReader.read_region` vs ``openslide.OpenSlide.read_region``
   on the same tiles (same coordinates, level and size), warm cache, interleaved
   repetitions, median of per-repetition means.

Every measured process is a child (``python -c "import bench_segment; ..."``) that reports
its own peak RSS, ``VmHWM`` (see :func:`peak_rss_mb` for why not ``ru_maxrss``). Wall times are taken inside the
child around the work (model loading included, interpreter start and imports excluded —
both children import the same modules, MONAI's child also MONAI).

The model (:class:`BenchTask`) is SAM's ViT image encoder (``--backbone tiny`` on CPU,
``vit_b`` for a GPU run) with a 1×1-conv semantic head (background / tissue), trained
for ``--train-steps`` Adam steps at bench time on tiles of the slide with labels from
:func:`pathseg_core.data.wsi.tissue.segment_tissue`. No pretrained weights are loaded.

Run alone: ``python benchmarks/bench_segment.py [--backbone vit_b --device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pathseg_core.contracts import Features, Prediction, PromptableSegmenter, Prompts
from pathseg_core.models.sam import SamSegmenter
from pathseg_core.task import SegmentationTask

HERE = Path(__file__).resolve().parent
#: The real slide (relative to :func:`pathseg_core.data.paths.data_root`).
CMU_SLIDE = "wsi/cmu1_small_region/CMU-1-Small-Region.svs"
#: Import name of this module in the children (``benchmarks/`` goes on ``PYTHONPATH``).
MODULE = "bench_segment"


# ----------------------------------------------------------------------------- the model
class BenchSegmenter(PromptableSegmenter):
    """SAM ViT encoder + 1×1-conv head: ``[B, 3, T, T]`` in ``[0, 255]`` → logits ``[B, C, T/p, T/p]``.

    Args:
        sam: the SAM model whose ``preprocess`` and image encoder are used (its prompt
            encoder and mask decoder are unused).
        num_classes: output channels (class 0 = background).
    """

    semantic = True

    def __init__(self, sam: SamSegmenter, num_classes: int) -> None:
        super().__init__()
        self.sam = sam
        self.num_classes = num_classes
        self.image_size = sam.image_size
        self.head = nn.Conv2d(sam.prompt_encoder.embed_dim, num_classes, kernel_size=1)

    def encode(self, images: Tensor, context: Tensor | None = None) -> Features:
        """``{"embedding": [B, D, S/p, S/p]}`` of square images (no padding is involved)."""
        return {"embedding": self.sam.encoder_features(self.sam.preprocess(images))["embedding"]}

    def decode(self, features: Features, prompts: Prompts | None) -> Prediction:
        """Class logits over the whole input extent; ``prompts`` is ignored."""
        return Prediction(self.head(features["embedding"]))


class BenchTask(SegmentationTask):
    """Task of :class:`BenchSegmenter` (what ``pathseg segment --model bench_segment.BenchTask`` loads).

    Args:
        backbone: SAM configuration of the encoder.
        encoder_input_size: encoder input side (tiles are resized to it).
        target_mpp: working resolution in µm/px (read by ``pathseg segment``).
        num_classes: output classes.
        class_names: names of the classes.
    """

    def __init__(
        self,
        backbone: Literal["tiny", "vit_b"] = "tiny",
        encoder_input_size: int = 256,
        target_mpp: float = 0.5,
        num_classes: int = 2,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, class_names=class_names or ["background", "tissue"], ce_weight=1.0)

    def configure_models(self) -> PromptableSegmenter:
        """The SAM encoder at ``encoder_input_size`` with a fresh head."""
        hp = self.hparams
        sam = SamSegmenter.from_config(hp.backbone, image_size=hp.encoder_input_size)
        return BenchSegmenter(sam, hp.num_classes)


def train_checkpoint(
    slide: Path,
    out: Path,
    *,
    backbone: str,
    tile_size: int,
    encoder_input_size: int,
    target_mpp: float,
    steps: int,
    n_tiles: int,
    lr: float,
    device: str,
    seed: int,
) -> Path:
    """Train the head of :class:`BenchTask` for ``steps`` Adam steps on tissue tiles of ``slide``; save a checkpoint.

    The SAM encoder stays as initialised (``torch.manual_seed(seed)`` inside ``fork_rng``;
    no pretrained weights can be had here): its embeddings of ``n_tiles`` tiles (drawn
    with a ``numpy`` generator seeded by ``seed``) are computed once, and the 1×1 head is
    fitted on them to :func:`~pathseg_core.data.wsi.tissue.segment_tissue` labels, so the
    model predicts smooth tissue regions (realistic GeoJSON / TIFF output, not noise).
    The file is a Lightning-format checkpoint (``state_dict`` + ``hyper_parameters``).
    """
    import lightning

    from pathseg_core.data.wsi.reader import SlideReader
    from pathseg_core.data.wsi.tiling import grid_tiles, read_tile
    from pathseg_core.data.wsi.tissue import TissueParams, detect_tissue, segment_tissue

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        task = BenchTask(backbone, encoder_input_size, target_mpp)  # type: ignore[arg-type]
    net = task.model.to(device)
    with SlideReader(slide) as reader:
        tissue = detect_tissue(reader, use_cache=False)
        tiles = grid_tiles(reader, tile_size=tile_size, mpp=target_mpp, tissue=tissue, min_tissue=0.1)
        picks = np.random.default_rng(seed).choice(len(tiles), size=n_tiles, replace=len(tiles) < n_tiles)
        images = np.stack([read_tile(reader, tiles[i]) for i in picks])
    labels = np.stack([segment_tissue(im, TissueParams(), target_mpp)[0] for im in images])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device)
    with torch.no_grad():
        embedding = net.eval().encode(x)["embedding"]
    # a 1×1 head sees one embedding pixel at a time: fit it at the embedding's resolution
    y = torch.from_numpy(labels.astype(np.float32))[:, None]
    y = F.interpolate(y, size=embedding.shape[-2:], mode="area")[:, 0].round().long().to(device)
    opt = torch.optim.Adam(net.head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(net.head(embedding), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {k: v.cpu() for k, v in task.state_dict().items()},
            "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        out,
    )
    return out


# ----------------------------------------------------------------------------- children
def peak_rss_mb() -> float:
    """Peak resident memory of this process's address space in MB: ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss``: on Linux, ``exec`` folds the high-water mark of the address space it
    replaces into ``ru_maxrss``, and ``subprocess`` starts children with ``vfork``, so a
    child's ``ru_maxrss`` (its own or via ``wait4`` / ``RUSAGE_CHILDREN``) is at least its
    parent's peak — here the benchmark process with the training model loaded. ``VmHWM``
    belongs to the address space created by ``exec``. Falls back to ``ru_maxrss`` where
    ``/proc`` is missing.
    """
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    found = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    assert found, "no VmHWM line in /proc/self/status"
    return int(found.group(1)) / 1024.0


def child_pathseg(argv: list[str]) -> dict:
    """Run ``pathseg segment`` (its ``main``) with ``argv``; returns seconds, tiles and exit code."""
    import io
    from contextlib import redirect_stderr

    import pathseg_core.inference.engine  # noqa: F401 - imported before the clock starts, as MONAI's child
    import pathseg_core.inference.loading  # noqa: F401
    from pathseg_core.inference.segment_cli import main

    err = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stderr(err):
        rc = main(argv)
    seconds = time.perf_counter() - t0
    found = re.search(r": (\d+) tiles →", err.getvalue())
    return {
        "rc": rc,
        "seconds": seconds,
        "tiles": int(found.group(1)) if found else None,
        "stderr": err.getvalue()[-2000:],
        "peak_rss_mb": peak_rss_mb(),
    }


def child_monai(argv: list[str]) -> dict:
    """MONAI ``sliding_window_inference`` over the whole slide at the target mpp, read into memory first.

    ``argv``: ``SLIDE CKPT TILE OVERLAP BATCH PRECISION DEVICE [TARGET_MPP]`` (the last
    defaults to the checkpoint's). The predictor is the engine's per-tile maths: logits
    resized to the window, softmax; the result is argmaxed to a ``[H, W]`` uint8 class map.
    """
    import contextlib

    from monai.inferers import sliding_window_inference

    from pathseg_core.data.wsi.reader import SlideReader
    from pathseg_core.inference.loading import load_segment_model
    from pathseg_core.inference.plan import output_geometry

    slide, ckpt, tile, overlap, batch, precision, device = argv[:7]
    tile_size, overlap_px, batch_size = int(tile), int(overlap), int(batch)
    windows = 0

    t0 = time.perf_counter()
    model = load_segment_model(f"{MODULE}.BenchTask", ckpt, device)
    net = model.net
    reader = SlideReader(slide)
    target = float(argv[7]) if len(argv) > 7 else (model.target_mpp or 1.0)
    ds, (h, w) = output_geometry(reader, target)
    rgb = reader.read_scaled(0, 0, w, h, ds)  # [h, w, 3] uint8: MONAI needs the whole image
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # [1, 3, h, w]
    del rgb
    cast = (
        torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )

    def predictor(x: Tensor) -> Tensor:
        nonlocal windows
        windows += x.shape[0]
        with cast:
            logits = net(x).mask_logits.float()
        if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.softmax(1)

    with torch.inference_mode():
        probs = sliding_window_inference(
            image,
            roi_size=(tile_size, tile_size),
            sw_batch_size=batch_size,
            predictor=predictor,
            overlap=overlap_px / tile_size,
            mode="constant",
            sw_device=torch.device(device),
            device=torch.device("cpu"),
        )
        ids = probs.argmax(1)[0].to(torch.uint8).numpy()
    seconds = time.perf_counter() - t0
    return {
        "rc": 0,
        "seconds": seconds,
        "tiles": windows,
        "shape": list(ids.shape),
        "tissue_fraction": float((ids > 0).mean()),
        "peak_rss_mb": peak_rss_mb(),
    }


CHILDREN = {"pathseg": child_pathseg, "monai": child_monai}


def child_main(argv: list[str]) -> int:
    """Entry of a child process: ``KIND ARGS…``; prints one JSON line prefixed ``BENCH_RESULT``."""
    torch.set_grad_enabled(False)
    result = CHILDREN[argv[0]](argv[1:])
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


@dataclass
class ChildRun:
    """A finished child: its JSON result, peak RSS (MB, see :func:`peak_rss_mb`) and process wall time (s)."""

    result: dict
    peak_rss_mb: float
    wall_s: float


class ChildError(RuntimeError):
    """A benchmark child failed (its exit code and the tail of its output in the message)."""


def run_child(kind: str, args: list[str], env: dict[str, str], log: Path) -> ChildRun:
    """Run a child of ``kind`` in a fresh interpreter; it reports its own peak RSS (:func:`peak_rss_mb`)."""
    cmd = [sys.executable, "-c", f"import sys, {MODULE}; sys.exit({MODULE}.child_main(sys.argv[1:]))", kind, *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        proc.wait()
    wall = time.perf_counter() - t0
    text = log.read_text()
    found = [line for line in text.splitlines() if line.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not found:
        raise ChildError(f"{kind} child exited {proc.returncode}; see {log}:\n{text[-3000:]}")
    result = json.loads(found[-1].removeprefix("BENCH_RESULT "))
    if result.get("rc", 0) != 0:
        raise ChildError(f"{kind} child: command returned {result['rc']}; see {log}:\n{result.get('stderr', '')}")
    return ChildRun(result, float(result["peak_rss_mb"]), wall)


# ----------------------------------------------------------------------------- rows
def row(
    metric: str,
    value: float,
    baseline: float | None,
    *,
    unit: str,
    baseline_name: str = "",
    floor: float | None = None,
    direction: Literal[">=", "<="] = ">=",
    ratio: float | None = None,
) -> dict:
    """One result row (the format ``benchmarks/run.py`` tabulates and writes to ``results.json``).

    ``ratio`` defaults to ``value / baseline``; ``status`` is ``PASS`` / ``MISS`` against
    ``floor`` (``ratio >= floor`` or ``<=``), or ``info`` without a floor.
    """
    if ratio is None and baseline:
        ratio = value / baseline
    status = "info"
    if floor is not None and ratio is not None:
        status = "PASS" if (ratio >= floor if direction == ">=" else ratio <= floor) else "MISS"
    return {
        "bench": "segment",
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "unit": unit,
        "ratio": ratio,
        "floor": floor,
        "direction": direction,
        "status": status,
    }


def print_rows(rows: list[dict]) -> None:
    """Print ``ratio`` lines: ``<metric>: <value> vs <baseline> → ratio <r> (floor <op> <f>) <STATUS>``."""
    for r in rows:
        base = "" if r["baseline"] is None else f" vs {r['baseline_name']} {r['baseline']:.4g}"
        ratio = "" if r["ratio"] is None else f" → ratio {r['ratio']:.3f}"
        floor = "" if r["floor"] is None else f" (floor {r['direction']} {r['floor']:g})"
        print(f"  {r['metric']}: {r['value']:.4g} {r['unit']}{base}{ratio}{floor} {r['status']}", flush=True)


# ----------------------------------------------------------------------------- 1 + 2: segment
@dataclass
class Setup:
    """Paths and settings shared by the segment measurements."""

    slide: Path
    ckpt: Path
    out: Path
    env: dict[str, str]
    args: argparse.Namespace

    def segment_argv(self, slide: Path, name: str, tissue_threshold: float | None) -> list[str]:
        """``pathseg segment`` arguments writing to ``out/runs/<name>``."""
        a = self.args
        argv = [str(slide), "--model", f"{MODULE}.BenchTask", "--ckpt", str(self.ckpt)]
        argv += ["--out", str(self.out / "runs" / name), "--overwrite", "--quiet"]
        argv += ["--tile-size", str(a.tile_size), "--overlap", str(a.overlap), "--batch-size", str(a.batch_size)]
        argv += ["--precision", a.precision, "--device", a.device, "--target-mpp", str(a.target_mpp)]
        if tissue_threshold is not None:
            argv += ["--tissue-threshold", str(tissue_threshold)]
        return argv

    def child_env(self, name: str) -> dict[str, str]:
        """Environment of a child: a fresh tissue cache per run (every run detects tissue, as a first run would)."""
        return {**self.env, "PATHSEG_CACHE": str(self.out / "cache" / name)}


def parse_repeat(text: str) -> tuple[int, int]:
    """``"4x4"`` → ``(4, 4)`` (columns × rows of copies)."""
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"repeat {text!r} must look like 2x2 (copies across × down, each >= 1)")
    return int(m.group(1)), int(m.group(2))


def scaled_slides(src: Path, repeats: list[tuple[int, int]], out: Path) -> dict[tuple[int, int], Path]:
    """``src`` itself for ``1x1``, else a pyramid repeating it (made once, reused while newer than ``src``)."""
    from pathseg_core.testing.fixtures import make_tiled_slide

    slides = {}
    for rx, ry in repeats:
        if (rx, ry) == (1, 1):
            slides[(rx, ry)] = src
            continue
        path = out / "slides" / f"{src.stem}_{rx}x{ry}.tif"
        if not path.exists() or path.stat().st_mtime < src.stat().st_mtime:
            path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            partial = path.with_name(path.name + ".partial")
            make_tiled_slide(src, partial, repeat=(rx, ry))
            os.replace(partial, path)
            print(f"  made {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        slides[(rx, ry)] = path
    return slides


def bench_throughput(setup: Setup, slide: Path, label: str) -> tuple[list[dict], ChildRun]:
    """Run ``pathseg segment`` (every window; default skipping) and MONAI on ``slide``; rows + the default run."""
    a = setup.args
    every = run_child(
        "pathseg", setup.segment_argv(slide, "all", 0.0), setup.child_env("all"), setup.out / "logs" / "pathseg_all.log"
    )
    default = run_child(
        "pathseg",
        setup.segment_argv(slide, "default", None),
        setup.child_env("default"),
        setup.out / "logs" / "pathseg_default.log",
    )
    monai_args = [
        str(slide),
        str(setup.ckpt),
        str(a.tile_size),
        str(a.overlap),
        str(a.batch_size),
        a.precision,
        a.device,
        str(a.target_mpp),
    ]
    monai = run_child("monai", monai_args, setup.child_env("monai"), setup.out / "logs" / "monai.log")
    n_all, n_monai, n_default = every.result["tiles"], monai.result["tiles"], default.result["tiles"]
    print(
        f"  {label}: windows pathseg {n_all} / MONAI {n_monai}; tissue tiles {n_default}; "
        f"seconds pathseg all {every.result['seconds']:.1f}, default {default.result['seconds']:.1f}, "
        f"MONAI {monai.result['seconds']:.1f}",
        flush=True,
    )
    tps_all = n_all / every.result["seconds"]
    tps_monai = n_monai / monai.result["seconds"]
    rows = [
        row(
            f"segment throughput, every window ({label})",
            tps_all,
            tps_monai,
            unit="tiles/s",
            baseline_name="MONAI",
            floor=1.0,
        ),
        row(
            f"segment peak RSS, every window ({label})",
            every.peak_rss_mb,
            monai.peak_rss_mb,
            unit="MB",
            baseline_name="MONAI",
            floor=0.5,
            direction="<=",
        ),
        row(
            f"segment peak RSS, default ({label})",
            default.peak_rss_mb,
            monai.peak_rss_mb,
            unit="MB",
            baseline_name="MONAI",
        ),
        row(
            f"tissue-skipping speedup ({n_default}/{n_all} tiles run)",
            every.result["seconds"] / default.result["seconds"],
            None,
            unit="x",
            ratio=every.result["seconds"] / default.result["seconds"],
        ),
        row(
            f"segment throughput with skipping, per window ({label})",
            n_all / default.result["seconds"],
            tps_monai,
            unit="tiles/s",
            baseline_name="MONAI",
        ),
    ]
    return rows, default


def bench_scaling(
    setup: Setup, slides: dict[tuple[int, int], Path], largest: ChildRun | None, extra: tuple[str, ...] = ()
) -> list[dict]:
    """Peak RSS of ``pathseg segment`` (default settings + ``extra``) per slide area; ``largest`` is reused if given."""
    runs: dict[tuple[int, int], ChildRun] = {}
    last = max(slides, key=lambda r: r[0] * r[1])
    tag = "".join(extra).replace("--", "_").replace("-", "_")
    for rep, path in slides.items():
        name = f"scale_{rep[0]}x{rep[1]}{tag}"
        runs[rep] = (
            largest
            if rep == last and largest is not None
            else run_child(
                "pathseg",
                setup.segment_argv(path, name, None) + list(extra),
                setup.child_env(name),
                setup.out / "logs" / f"{name}.log",
            )
        )
        r = runs[rep]
        print(
            f"  {rep[0]}x{rep[1]}{' ' + ' '.join(extra) if extra else ''} ({path.name}): peak RSS "
            f"{r.peak_rss_mb:.0f} MB, {r.result['tiles']} tiles, {r.result['seconds']:.1f} s",
            flush=True,
        )
    first = min(slides, key=lambda r: r[0] * r[1])
    base = runs[first].peak_rss_mb
    rows = []
    for rep, r in runs.items():
        if rep == first:
            continue
        area = rep[0] * rep[1] // (first[0] * first[1])
        floor = 1.10 if rep == last and not extra else None
        rows.append(
            row(
                f"segment peak RSS at {area}x area vs 1x{' (' + ' '.join(extra) + ')' if extra else ''}",
                r.peak_rss_mb,
                base,
                unit="MB",
                baseline_name="1x",
                floor=floor,
                direction="<=",
            )
        )
    return rows


# ----------------------------------------------------------------------------- 3: reader
def bench_reader(slide: Path, *, n_tiles: int, size: int, reps: int, level: int, seed: int) -> dict:
    """Median per-tile seconds of ``SlideReader.read_region`` vs ``OpenSlide.read_region`` (same tiles).

    ``n_tiles`` positions (level-0 ``xy``, seeded) inside ``level``; each is read once by
    both to warm OpenSlide's tile cache, then ``reps`` rounds alternate raw and reader
    (order flipped every round). Raw returns a PIL RGBA image; the reader an RGB array.
    """
    import openslide

    from pathseg_core.data.wsi.reader import SlideReader

    raw = openslide.OpenSlide(str(slide))
    reader = SlideReader(slide, backend="openslide")
    ds = raw.level_downsamples[level]
    lw, lh = raw.level_dimensions[level]
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, max(1, lw - size), n_tiles)
    ys = rng.integers(0, max(1, lh - size), n_tiles)
    coords = [(round(x * ds), round(y * ds)) for x, y in zip(xs.tolist(), ys.tolist())]

    def run_raw() -> None:
        for x, y in coords:
            raw.read_region((x, y), level, (size, size))

    def run_reader() -> None:
        for x, y in coords:
            reader.read_region(x, y, size, size, level=level)

    same = all(
        np.array_equal(
            np.asarray(raw.read_region(c, level, (size, size)))[..., :3],
            reader.read_region(*c, size, size, level=level),
        )
        for c in coords
    )
    times: dict[str, list[float]] = {"raw": [], "reader": []}
    for k in range(reps):
        order = [("raw", run_raw), ("reader", run_reader)]
        for name, fn in order if k % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / len(coords))
    raw.close()
    reader.close()
    return {"raw_s": float(np.median(times["raw"])), "reader_s": float(np.median(times["reader"])), "same_pixels": same}


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """Options of the segment benchmarks (defaults: the CPU run of ``make bench``)."""
    p = argparse.ArgumentParser(prog="bench_segment", description=__doc__.splitlines()[0])
    p.add_argument("--slide", type=Path, help="source slide (default: the shared CMU-1-Small-Region.svs)")
    p.add_argument(
        "--out", type=Path, default=Path("bench_out") / "segment", help="work folder (default bench_out/segment)"
    )
    p.add_argument(
        "--backbone", choices=("tiny", "vit_b"), default="tiny", help="SAM encoder of the model (vit_b for GPU)"
    )
    p.add_argument("--encoder-input-size", type=int, default=256, help="encoder input side (tiles are resized to it)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (both pathseg and MONAI)")
    p.add_argument("--precision", choices=("32", "bf16"), default="32")
    p.add_argument("--tile-size", type=int, default=512, help="as pathseg segment's default")
    p.add_argument("--overlap", type=int, default=64, help="as pathseg segment's default")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--target-mpp", type=float, default=0.5, help="working resolution µm/px (0.5 = 20×)")
    p.add_argument(
        "--repeats",
        type=parse_repeat,
        nargs="+",
        default=[(1, 1), (2, 2), (4, 4)],
        help="slide areas for the memory scaling (1x1 = the slide itself); throughput runs on the largest",
    )
    p.add_argument(
        "--equal-batch-check",
        type=int,
        default=4,
        metavar="B",
        help="also measure 1x vs the largest area at --batch-size B (the bound at a second batch size; 0 = skip)",
    )
    p.add_argument("--train-steps", type=int, default=100, help="Adam steps of the head before the checkpoint is saved")
    p.add_argument("--train-tiles", type=int, default=16, help="tiles the head is fitted on")
    p.add_argument("--reader-tiles", type=int, default=48)
    p.add_argument("--reader-reps", type=int, default=21)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch / OpenMP threads of every measured process (default 1: on a shared 2-core machine two "
        "threads stall at every parallel region when another process runs; 0 = torch's default)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the three measurements; print a ratio line per result and return the rows.

    ``argv=None`` means the defaults (``benchmarks/run.py`` calls ``main()``).
    """
    args = build_parser().parse_args([] if argv is None else argv)
    from pathseg_core.data.paths import data_root

    src = (args.slide or data_root() / CMU_SLIDE).resolve()
    out = args.out.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    threads = torch.get_num_threads()
    if args.threads > 0:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        torch.set_num_threads(args.threads)
    try:
        return _run(args, src, out, env)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, src: Path, out: Path, env: dict[str, str]) -> list[dict]:
    encoder_size = args.encoder_input_size
    print(
        f"  model: SAM {args.backbone} encoder @ {encoder_size} px + 1x1 head; tile {args.tile_size}, overlap "
        f"{args.overlap}, batch {args.batch_size}, {args.target_mpp} µm/px, precision {args.precision}, "
        f"device {args.device}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    t0 = time.perf_counter()
    ckpt = train_checkpoint(
        src, out / "bench_task.ckpt", backbone=args.backbone, tile_size=args.tile_size,
        encoder_input_size=encoder_size, target_mpp=args.target_mpp, steps=args.train_steps,
        n_tiles=args.train_tiles, lr=1e-2, device=args.device, seed=args.seed,
    )  # fmt: skip
    print(f"  trained {args.train_steps} steps in {time.perf_counter() - t0:.1f} s → {ckpt.name}", flush=True)
    slides = scaled_slides(src, sorted(set(args.repeats), key=lambda r: r[0] * r[1]), out)
    setup = Setup(src, ckpt, out, env, args)
    largest_rep = max(slides, key=lambda r: r[0] * r[1])
    label = f"{largest_rep[0]}x{largest_rep[1]} slide"
    rows, default_run = bench_throughput(setup, slides[largest_rep], label)
    rows += bench_scaling(setup, slides, default_run)
    if args.equal_batch_check:
        # The same bound at a second batch size: activations scale with the batch, the
        # slide-size effect must not.
        ends = {r: slides[r] for r in (min(slides, key=lambda r: r[0] * r[1]), largest_rep)}
        rows += bench_scaling(setup, ends, None, ("--batch-size", str(args.equal_batch_check)))

    for path in dict.fromkeys([src, slides[largest_rep]]):
        r = bench_reader(path, n_tiles=args.reader_tiles, size=256, reps=args.reader_reps, level=0, seed=args.seed)
        if not r["same_pixels"]:
            raise RuntimeError(f"SlideReader and OpenSlide returned different pixels on {path.name}")
        rows.append(
            row(
                f"read_region overhead ({path.suffix[1:]}, level 0, 256 px)",
                r["reader_s"] * 1e3,
                r["raw_s"] * 1e3,
                unit="ms/tile",
                baseline_name="OpenSlide",
                floor=1.1,
                direction="<=",
            )
        )
    print_rows(rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
