"""Streaming whole-slide inference: tiles in, pyramidal TIFF + QuPath GeoJSON + overlay out.

One slide runs as a pipeline pulled by the TIFF writer:

1. :meth:`SlideSegmenter.prepare` opens the slide, fixes the output frame and builds the
   work units (tissue tiles for semantic models, prompt windows for promptable ones).
2. ``_bands`` walks the row bands top to bottom. A band already listed in the resume
   journal is loaded from its cache; the remaining units are read (optionally by
   DataLoader workers) in fixed batches that run across band borders (a resumed run
   recomputes the batch it stopped in, so it forms the same batches and gets
   bit-identical scores), predicted, and blended into a
   :class:`~pathseg_core.inference.blend.BandAccumulator`; a band's rows are argmaxed
   and committed to the journal as soon as the next band's first unit arrives.
3. Each finished band flows into the TIFF writer (level 0 + spilled pyramid), the band
   vectoriser (regions go to the GeoJSON file as soon as they close; it runs on a helper
   thread, overlapping the next band's prediction) and the thumbnail sampler (overlay).

Memory is bounded by the batch and tile sizes: batches run across band borders, the blend
accumulator finishes columns as soon as no tile can reach them (only the overlap rows are
carried full-width, float32), the vectoriser traces column chunks, and tiles of the next
batch are read on one thread while the current batch is predicted. What remains
width-proportional is one band of uint8 class ids and the TIFF writer's tile row.

Outputs are written as ``<name>.*.partial`` and renamed only when all three are complete;
on any failure the partial files are removed and earlier outputs stay untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pathseg_core.contracts import Prompts
from pathseg_core.data.wsi.annotations import Annotation, read_geojson
from pathseg_core.data.wsi.frames import PatchFrame
from pathseg_core.data.wsi.prompts import annotation_prompts
from pathseg_core.data.wsi.reader import SlideReader
from pathseg_core.data.wsi.tissue import TissueParams, detect_tissue
from pathseg_core.inference.blend import BandAccumulator, blend_window
from pathseg_core.inference.journal import ResumeJournal
from pathseg_core.inference.loading import SegmentModel
from pathseg_core.inference.overlay import ThumbnailSampler, render_overlay, thumbnail_shape, write_png
from pathseg_core.inference.plan import SlidePlan, SlidePrompt, WorkUnit, plan_grid, plan_prompts
from pathseg_core.inference.tiff_writer import PyramidalMaskWriter
from pathseg_core.inference.vectorize import BandVectorizer, GeoJSONWriter
from pathseg_core.visualize import palette

T = TypeVar("T")

#: Version of the band cache format (part of the resume signature).
CACHE_VERSION = 1
#: Context field of view / tile field of view when neither the options nor the checkpoint say.
DEFAULT_CONTEXT_FACTOR = 2.0


class OutputExistsError(FileExistsError):
    """Outputs (or an interrupted run's state) exist and neither --overwrite nor --resume was given."""


class OutputFolderError(PermissionError):
    """The output folder cannot be created or written."""


class DiskFullError(OSError):
    """The disk filled up while writing outputs (``errno`` is ``ENOSPC``)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class PromptsRequiredError(ValueError):
    """A promptable model was run without a prompt file."""


class ModelOutputError(ValueError):
    """The model's output does not match its declared classes."""


@dataclass(frozen=True)
class SegmentOptions:
    """Settings of a segmentation run (all but the last five change the predicted bands).

    Attributes:
        tile_size: model input side in pixels.
        overlap: pixels shared by neighbouring tiles (blended; band height = tile - overlap).
        target_mpp: working resolution in µm/px (``None``: the checkpoint's, else ``default_mpp``).
        mpp: level-0 µm/px of the slide, overriding its metadata.
        tissue_threshold: least tissue fraction of a tile to run it (semantic models).
        precision: ``"32"`` or ``"bf16"`` (autocast).
        context_factor: field of view of the context patch / the tile's, for models that
            need one (``None``: the checkpoint's datamodule's, else 2).
        prompt_margin: context around a prompt, as a fraction of its extent per side.
        prompt_threshold: probability a prompted mask must exceed to paint a pixel.
        default_mpp: working resolution when neither the option nor the checkpoint gives one.
        batch_size: tiles per forward pass (batches run across band borders).
        num_workers: DataLoader workers reading tiles (0: read in the main process).
        tiff_tile: tile side of the output TIFF.
        overlay_size: longest side of the overlay PNG.
        ndigits: decimals of GeoJSON coordinates.
    """

    tile_size: int = 512
    overlap: int = 64
    target_mpp: float | None = None
    mpp: float | None = None
    tissue_threshold: float = 0.05
    precision: Literal["32", "bf16"] = "32"
    context_factor: float | None = None
    prompt_margin: float = 0.25
    prompt_threshold: float = 0.5
    default_mpp: float = 1.0
    batch_size: int = 8
    num_workers: int = 0
    tiff_tile: int = 512
    overlay_size: int = 1024
    ndigits: int = 2

    def __post_init__(self) -> None:
        if self.tile_size < 16 or not 0 <= 2 * self.overlap <= self.tile_size:
            raise ValueError(
                f"--overlap {self.overlap} must be in 0..tile_size/2 and --tile-size {self.tile_size} >= 16"
            )
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("--batch-size must be >= 1 and --num-workers >= 0")
        if not 0.0 <= self.tissue_threshold <= 1.0:
            raise ValueError(f"--tissue-threshold {self.tissue_threshold} must be a fraction in 0..1")
        for name in ("target_mpp", "mpp"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")

    def band_settings(self) -> dict:
        """The settings that change band contents (compared on resume)."""
        # batch_size: a batch's composition may change its scores in the last bits, and a
        # resumed run must reproduce the interrupted one byte for byte.
        keys = ("tile_size", "overlap", "precision", "prompt_margin", "prompt_threshold", "batch_size")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class OutputPaths:
    """Where one slide's outputs go: ``<out>/<name>.tiff|.geojson|.overlay.png`` and ``.<name>.work/``."""

    mask: Path
    geojson: Path
    overlay: Path
    work: Path

    @classmethod
    def for_slide(cls, out_dir: str | Path, name: str) -> OutputPaths:
        """Paths for a slide called ``name`` in ``out_dir``."""
        out = Path(out_dir)
        return cls(out / f"{name}.tiff", out / f"{name}.geojson", out / f"{name}.overlay.png", out / f".{name}.work")

    def finals(self) -> list[Path]:
        """The three output files."""
        return [self.mask, self.geojson, self.overlay]

    @staticmethod
    def partial(path: Path) -> Path:
        """The in-progress name of an output file."""
        return path.with_name(path.name + ".partial")


@dataclass
class SlideResult:
    """What happened to one slide."""

    slide: Path
    status: Literal["done", "skipped"]
    outputs: OutputPaths
    tiles: int = 0
    resumed_bands: int = 0
    warnings: list[str] = field(default_factory=list)


class ProgressHook(Protocol):
    """Receives progress in tiles (a rich bar in the CLI)."""

    def start(self, name: str, total: int) -> None:
        """A slide with ``total`` units begins."""

    def advance(self, n: int) -> None:
        """``n`` more units are done."""

    def finish(self) -> None:
        """The slide ended (done or failed)."""


def ensure_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check a file can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pathseg-probe-"):
            pass
    except OSError as err:
        raise OutputFolderError(
            f"output folder {folder} is not writable ({err.strerror or type(err).__name__}); choose another --out"
        ) from None
    return folder


def annotations_to_prompts(
    annotations: list[Annotation], slide_size: tuple[int, int], names: list[str], colors: np.ndarray
) -> tuple[list[SlidePrompt], list[str], np.ndarray]:
    """Level-0 prompts from QuPath annotations, with the class table extended by new names.

    Conversion is :func:`pathseg_core.data.wsi.prompts.annotation_prompts` in the level-0
    frame: areas become their bounding box, each point its own positive point prompt. A
    classified annotation paints its class (names the model does not know are appended,
    sorted); an unclassified one paints class 1.
    """
    names = list(names)
    new = sorted({a.class_name for a in annotations if a.class_name and a.class_name not in names})
    names += new
    if new:
        colors = np.concatenate([colors, palette(len(names), None)[len(colors) :]])
    ids = [replace(a, class_id=names.index(a.class_name) if a.class_name else 1) for a in annotations]
    found = annotation_prompts(ids, PatchFrame(0.0, 0.0, 1.0, *slide_size))
    prompts = [
        SlidePrompt(int(c), tuple(float(v) for v in box)) for box, c in zip(found.boxes.tolist(), found.box_classes)
    ]
    for (x, y), c in zip(found.points.tolist(), found.point_classes):
        prompts.append(SlidePrompt(int(c), None, ((float(x), float(y)),), (1,)))
    return prompts, names, colors


class _UnitDataset(Dataset):
    """Pixels of work units: ``(image [T, T, 3] uint8, context [T, T, 3] uint8 or None)``."""

    def __init__(self, reader: SlideReader, units: list[WorkUnit], context_factor: float | None) -> None:
        self.reader = reader
        self.units = units
        self.context_factor = context_factor

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        frame = self.units[i].frame
        image = self.reader.read_frame(frame)
        if self.context_factor is None:
            return image, None
        cx, cy = frame.centre
        ctx = PatchFrame.centred(cx, cy, frame.downsample * self.context_factor, frame.width, frame.height)
        return image, self.reader.read_frame(ctx)


def _collate(items: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray | None]:
    images = np.stack([i for i, _ in items])
    contexts = None if items[0][1] is None else np.stack([c for _, c in items])
    return images, contexts


def _prompt_kind(unit: WorkUnit) -> tuple:
    p = unit.prompt
    return () if p is None else (p.box is not None, len(p.points))


def plan_batches(units: list[WorkUnit], batch_size: int) -> list[list[int]]:
    """Indices of ``units`` in batches of ≤ ``batch_size`` consecutive units whose prompts share one shape.

    Batches run across band borders: a slide whose bands hold fewer tiles than
    ``batch_size`` still runs full forward passes, so activation memory is set by
    ``batch_size`` alone, not by the slide's width.
    """
    batches: list[list[int]] = []
    for i, unit in enumerate(units):
        if batches and len(batches[-1]) < batch_size and _prompt_kind(units[batches[-1][0]]) == _prompt_kind(unit):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _settle_columns(units: list[WorkUnit]) -> list[int]:
    """Per unit: the least column of it and of the units after it in its band.

    Once that unit is reached, no remaining unit of the band touches the columns left of
    this one, so the accumulator can finish them (:meth:`BandAccumulator.settle`).
    """
    out = [0] * len(units)
    least: dict[int, int] = {}
    for i in range(len(units) - 1, -1, -1):
        unit = units[i]
        least[unit.band] = min(least.get(unit.band, unit.x), unit.x)
        out[i] = least[unit.band]
    return out


def read_ahead(batches: Iterable[T]) -> Iterator[T]:
    """Yield ``batches`` while one thread reads the next one (slide decoding releases the GIL).

    Without DataLoader worker processes the tiles of batch ``n + 1`` are read during the
    forward pass of batch ``n``; at most one batch waits. An error while reading is
    re-raised here, in order; closing the generator stops the thread after its current read.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathseg-read") as pool:
        it = iter(batches)
        sentinel = object()
        pending = pool.submit(next, it, sentinel)
        try:
            while True:
                item = pending.result()
                if item is sentinel:
                    return
                pending = pool.submit(next, it, sentinel)
                yield item
        finally:
            pending.cancel()


def _file_stat(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class SlideSegmenter:
    """Runs a :class:`SegmentModel` over slides and writes their outputs.

    Args:
        model: the loaded model and its class table.
        options: run settings.
        device: where the model runs (it must already be there).
        autocast: apply ``options.precision`` with ``torch.autocast`` (Lightning's predict
            path passes ``False``: its precision plugin does it).
        progress: optional progress receiver.
        tissue_cache: folder for cached tissue masks (default: the tissue module's).
    """

    def __init__(
        self,
        model: SegmentModel,
        options: SegmentOptions,
        device: torch.device | str = "cpu",
        autocast: bool = True,
        progress: ProgressHook | None = None,
        tissue_cache: str | Path | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self.device = torch.device(device)
        self.autocast = autocast
        self.progress = progress
        self.tissue_cache = tissue_cache

    # ------------------------------------------------------------------ planning
    def prepare(
        self, slide: str | Path, prompts: str | Path | None = None
    ) -> tuple[SlideReader, SlidePlan, list[str], np.ndarray, list[str]]:
        """Open and check the slide, build its plan; returns ``(reader, plan, names, colors, warnings)``.

        Raises the slide layer's one-line errors (missing / unreadable slide, no mpp,
        resolution finer than level 0, bad GeoJSON) before anything is written.
        """
        opt = self.options
        reader = SlideReader(slide, mpp=opt.mpp)
        _ = reader.dimensions  # opens the file: SlideFormatError for non-slides / truncated files
        reader.require_mpp()
        target = opt.target_mpp or self.model.target_mpp or opt.default_mpp
        names, colors = list(self.model.class_names), self.model.colors.copy()
        warnings: list[str] = []
        if self.model.semantic:
            if prompts is not None:
                warnings.append(f"{type(self.model.net).__name__} is a semantic model: --prompts ignored")
            tissue = detect_tissue(reader, TissueParams(), cache_dir=self.tissue_cache)
            plan = plan_grid(reader, target, opt.tile_size, opt.overlap, tissue, opt.tissue_threshold)
            if not plan.units:
                warnings.append(
                    f"no tissue found in {reader.path} (tissue threshold {opt.tissue_threshold}); outputs are empty"
                )
        else:
            if prompts is None:
                raise PromptsRequiredError(
                    f"{type(self.model.net).__name__} is promptable: pass --prompts FILE.geojson with boxes or points"
                )
            annotations = read_geojson(prompts, slide_size=reader.dimensions)
            slide_prompts, names, colors = annotations_to_prompts(annotations, reader.dimensions, names, colors)
            plan = plan_prompts(reader, target, opt.tile_size, opt.overlap, slide_prompts, opt.prompt_margin)
            if not plan.units:
                warnings.append(f"no prompts in {prompts}; outputs are empty")
        return reader, plan, names, colors, warnings

    def _signature(self, slide: Path, plan: SlidePlan, names: list[str]) -> dict:
        units = hashlib.sha256(json.dumps([u.key() for u in plan.units]).encode()).hexdigest()
        return {
            "version": CACHE_VERSION,
            "slide": _file_stat(slide),
            "model": self.model.identity,
            "settings": {**self.options.band_settings(), "context_factor": self._context_factor()},
            "downsample": plan.downsample,
            "out_shape": list(plan.out_shape),
            "classes": names,
            "units": units,
        }

    # ------------------------------------------------------------------ running
    def segment(
        self,
        slide: str | Path,
        out_dir: str | Path,
        prompts: str | Path | None = None,
        overwrite: bool = False,
        resume: bool = False,
    ) -> SlideResult:
        """Segment one slide into ``out_dir``; see the module docstring for the outputs.

        Raises:
            OutputExistsError: outputs or an interrupted run's state exist and neither
                ``overwrite`` nor ``resume`` is set.
            DiskFullError: the disk filled up (partial files removed; rerun with resume).
        """
        slide = Path(slide)
        reader, plan, names, colors, warnings = self.prepare(slide, prompts)
        try:
            return self._segment(slide, reader, plan, names, colors, warnings, Path(out_dir), overwrite, resume)
        finally:
            reader.close()

    def _segment(
        self,
        slide: Path,
        reader: SlideReader,
        plan: SlidePlan,
        names: list[str],
        colors: np.ndarray,
        warnings: list[str],
        out_dir: Path,
        overwrite: bool,
        resume: bool,
    ) -> SlideResult:
        paths = OutputPaths.for_slide(ensure_writable(out_dir), reader.source_id)
        existing = [p for p in paths.finals() if p.exists()]
        if existing and not (overwrite or resume):
            shown = ", ".join(p.name for p in existing)
            raise OutputExistsError(
                f"outputs for {slide.name} already exist in {paths.mask.parent} ({shown}); "
                f"pass --overwrite to replace them or --resume to finish an interrupted run"
            )
        if paths.work.exists() and not (overwrite or resume):
            raise OutputExistsError(
                f"an interrupted run of {slide.name} left {paths.work}; pass --resume to continue it or --overwrite"
            )
        if resume and len(existing) == len(paths.finals()) and not paths.work.exists():
            return SlideResult(slide, "skipped", paths, warnings=[f"{slide.name} is already complete; skipped"])
        journal = ResumeJournal(paths.work, self._signature(slide, plan, names))
        if self.progress is not None:
            self.progress.start(slide.name, len(plan.units))
        try:
            done = journal.start(resume=resume)
            self._write_outputs(reader, plan, names, colors, journal, done, paths)
            for path in paths.finals():
                os.replace(paths.partial(path), path)
        except BaseException as err:
            for path in paths.finals():
                paths.partial(path).unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise DiskFullError(
                    errno.ENOSPC,
                    f"disk full while writing outputs of {slide.name} to {paths.mask.parent}; "
                    f"partial files removed — free space and rerun with --resume",
                ) from err
            raise
        finally:
            if self.progress is not None:
                self.progress.finish()
        journal.remove()
        return SlideResult(slide, "done", paths, len(plan.units), done, warnings)

    def _write_outputs(
        self,
        reader: SlideReader,
        plan: SlidePlan,
        names: list[str],
        colors: np.ndarray,
        journal: ResumeJournal,
        done: int,
        paths: OutputPaths,
    ) -> None:
        opt = self.options
        writer = PyramidalMaskWriter(
            paths.partial(paths.mask), plan.out_shape, plan.target_mpp, paths.work / "pyramid", tile=opt.tiff_tile
        )
        vectorizer = BandVectorizer(len(names))
        thumb_ds, thumb_shape = thumbnail_shape(reader.dimensions, opt.overlay_size)
        sampler = ThumbnailSampler(plan.out_shape, thumb_shape, thumb_ds / plan.downsample)
        geojson = GeoJSONWriter(paths.partial(paths.geojson), names, colors, plan.downsample, opt.ndigits)

        bands = self._bands(reader, plan, len(names), journal, done)

        def chunks(pool: ThreadPoolExecutor) -> Iterator[np.ndarray]:
            # Band k is vectorised on the pool's one thread while band k + 1 is predicted
            # (torch releases the GIL); at most one band is in flight, and waiting for it
            # re-raises its error (a full disk) here, in order.
            pending: Future | None = None
            for ids in bands:
                if pending is not None:
                    pending.result()
                pending = pool.submit(lambda ids=ids: geojson.write(vectorizer.add_band(ids)))
                sampler.add_band(ids)
                yield ids
            if pending is not None:
                pending.result()

        # closing(): on a failure the generators are closed here, so the tile-reading thread
        # has stopped before the caller closes the slide.
        with geojson, contextlib.closing(bands):
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathseg-geojson") as pool:
                with contextlib.closing(chunks(pool)) as stream:
                    writer.write(stream)
            geojson.write(vectorizer.finish())
        thumb = reader.read_thumbnail(thumb_ds)
        write_png(paths.partial(paths.overlay), render_overlay(thumb, sampler.mask, colors))

    def _bands(
        self, reader: SlideReader, plan: SlidePlan, n_classes: int, journal: ResumeJournal, done: int
    ) -> Iterator[np.ndarray]:
        """Class ids of each band in order: cached ones loaded, the rest predicted and committed.

        Batches run across band borders (:func:`plan_batches`), so every forward pass but the
        last is full whatever the slide's width. Scores are blended unit by unit in plan
        order and band ``k`` is finished as soon as the first unit of a later band comes
        up; a resumed run recomputes the batch it stopped in (same composition, same
        scores) and skips the units the saved carry already holds.
        """
        opt, semantic = self.options, self.model.semantic
        width = plan.out_shape[1]
        reduce, background = ("sum", 0.0) if semantic else ("max", opt.prompt_threshold)
        if 0 < done < plan.n_bands:
            acc = BandAccumulator.from_state(journal.load_carry(done - 1), width, n_classes, reduce, background)
        else:
            acc = BandAccumulator(width, n_classes, reduce, background)
        for k in range(done):
            y0, y1 = plan.band_rows(k)
            ids = journal.load_band(k)
            if ids.shape != (y1 - y0, width):
                raise ValueError(f"cached band {k} in {journal.folder} has shape {ids.shape}; rerun with --overwrite")
            self._advance(len(plan.units_of(k)))
            yield ids
        batches = [b for b in plan_batches(plan.units, opt.batch_size) if plan.units[b[-1]].band >= done]
        context = self._context_factor() if self.model.net.needs_context else None
        loader = DataLoader(
            _UnitDataset(reader, plan.units, context),
            batch_sampler=batches,
            num_workers=opt.num_workers,
            collate_fn=_collate,
        )
        # Worker processes read ahead by themselves; without them one thread does.
        pixels = (batch for batch in loader) if opt.num_workers else read_ahead(loader)
        with contextlib.closing(pixels):
            yield from self._blend_batches(plan, batches, pixels, acc, journal, done, n_classes)

    def _blend_batches(
        self,
        plan: SlidePlan,
        batches: list[list[int]],
        pixels: Iterator[tuple[np.ndarray, np.ndarray | None]],
        acc: BandAccumulator,
        journal: ResumeJournal,
        done: int,
        n_classes: int,
    ) -> Iterator[np.ndarray]:
        """Predict ``batches`` (pixels from ``pixels``), blend unit by unit, yield each band as it finishes."""
        semantic = self.model.semantic
        window = blend_window(plan.tile_size, self.options.overlap) if semantic else None
        settle_before = _settle_columns(plan.units)
        k = done  # next band to finish

        def finish_upto(band: int) -> Iterator[np.ndarray]:
            nonlocal k
            while k < band:
                ids = acc.finish(plan.band_rows(k)[1])
                journal.commit(k, ids, acc.state())
                k += 1
                yield ids

        for indices, (images, contexts) in zip(batches, pixels):
            units = [plan.units[i] for i in indices]
            scores = self._predict(images, contexts, units, n_classes)
            for i, unit, unit_scores in zip(indices, units, scores):
                if unit.band < done:  # blended before the interruption: already in the carry
                    continue
                yield from finish_upto(unit.band)
                # Columns left of every remaining unit of this band are final: free their scores.
                acc.settle(plan.band_rows(unit.band)[1], settle_before[i])
                if semantic:
                    acc.add(unit_scores, unit.y, unit.x, weight=window)
                else:
                    acc.add(unit_scores, unit.y, unit.x, channel=unit.prompt.class_id)
                self._advance(1)
        yield from finish_upto(plan.n_bands)

    def _context_factor(self) -> float:
        return self.options.context_factor or self.model.context_factor or DEFAULT_CONTEXT_FACTOR

    def _advance(self, n: int) -> None:
        if self.progress is not None and n:
            self.progress.advance(n)

    # ------------------------------------------------------------------ the model
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast and self.options.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prompts(self, units: list[WorkUnit]) -> Prompts:
        """Prompts ``[B, 1, …]`` of a batch whose units share one prompt shape."""
        first = units[0].prompt
        boxes = points = labels = None
        if first.box is not None:
            boxes = torch.tensor([[u.prompt.box] for u in units], dtype=torch.float32, device=self.device)
        if first.points:
            points = torch.tensor([[u.prompt.points] for u in units], dtype=torch.float32, device=self.device)
            labels = torch.tensor([[u.prompt.labels] for u in units], dtype=torch.long, device=self.device)
        return Prompts(boxes=boxes, points=points, point_labels=labels)

    def _predict(
        self, images: np.ndarray, contexts: np.ndarray | None, units: list[WorkUnit], n_classes: int
    ) -> list[np.ndarray]:
        """Scores per unit: ``[C, T, T]`` class probabilities (semantic) or ``[1, side, side]`` mask probability."""
        net = self.model.net
        size = images.shape[1:3]
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float()
        ctx = None if contexts is None else torch.from_numpy(contexts).to(self.device).permute(0, 3, 1, 2).float()
        prompts = None if net.semantic else self._prompts(units)
        with torch.inference_mode(), self._autocast():
            logits = net(x, prompts, ctx).mask_logits.float()
        if net.semantic:
            if logits.shape[1] != n_classes:
                raise ModelOutputError(
                    f"{type(net).__name__} predicts {logits.shape[1]} channels but the checkpoint names {n_classes} classes"
                )
            if tuple(logits.shape[-2:]) != tuple(size):
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            return list(logits.softmax(1).cpu().numpy())
        out = []
        for i, unit in enumerate(units):
            one = logits[i : i + 1, :1]
            if tuple(one.shape[-2:]) != (unit.side, unit.side):
                one = F.interpolate(one, size=(unit.side, unit.side), mode="bilinear", align_corners=False)
            out.append(one.sigmoid()[0].cpu().numpy())
        return out
