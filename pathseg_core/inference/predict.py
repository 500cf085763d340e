"""``trainer.predict`` over a list of slides: each process (GPU) segments its own share.

The same engine as ``pathseg segment`` runs inside ``predict_step``, one slide per step:
Lightning places the model on each rank's device and applies the precision plugin
(``precision="bf16-mixed"`` autocasts the forward passes), and
:class:`SlideShardSampler` gives rank ``r`` of ``W`` the slides ``r, r + W, r + 2W, …`` —
every slide exactly once, no padding duplicates (so two ranks never write one output).
:class:`SlidePredictionWriter` appends one JSON line per slide to
``<out>/segment_results.rank<r>.jsonl``.

Example::

    model = load_segment_model("sam", "last.ckpt")
    module = SlideSegmentationModule(model, slides, "results/", SegmentOptions(precision="bf16"))
    trainer = Trainer(accelerator="gpu", devices=4, strategy="ddp", precision="bf16-mixed",
                      use_distributed_sampler=False, logger=False, callbacks=[SlidePredictionWriter("results/")])
    trainer.predict(module, return_predictions=False)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, Sampler

from pathseg_core.inference.engine import SegmentOptions, SlideSegmenter
from pathseg_core.inference.loading import SegmentModel


class SlideListDataset(Dataset):
    """Items ``(index, slide path, prompt path or None)`` of a slide list."""

    def __init__(self, slides: Sequence[str | Path], prompts: Sequence[str | Path | None] | None = None) -> None:
        self.slides = [Path(s) for s in slides]
        self.prompts = list(prompts) if prompts is not None else [None] * len(self.slides)
        if len(self.prompts) != len(self.slides):
            raise ValueError(f"{len(self.prompts)} prompt files for {len(self.slides)} slides; give one per slide")

    def __len__(self) -> int:
        return len(self.slides)

    def __getitem__(self, i: int) -> tuple[int, Path, Path | None]:
        prompt = self.prompts[i]
        return i, self.slides[i], None if prompt is None else Path(prompt)


class SlideShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, …`` of ``n`` items: a partition, no padding."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def _single(batch: list[tuple[int, Path, Path | None]]) -> tuple[int, Path, Path | None]:
    return batch[0]


class SlideSegmentationModule(LightningModule):
    """Predict-only module: one ``predict_step`` segments one slide with :class:`SlideSegmenter`.

    Args:
        model: the loaded model (its ``net`` becomes a submodule, moved by Lightning).
        slides: slide files.
        out_dir: output folder (shared by all ranks).
        options: run settings; the precision is applied by the Trainer, not here.
        prompts: one GeoJSON per slide (promptable models), or ``None``.
        overwrite: replace existing outputs.
        resume: continue interrupted slides, skip finished ones.
    """

    def __init__(
        self,
        model: SegmentModel,
        slides: Sequence[str | Path],
        out_dir: str | Path,
        options: SegmentOptions | None = None,
        prompts: Sequence[str | Path | None] | None = None,
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        super().__init__()
        self.segment_model = model
        self.net = model.net
        self.dataset = SlideListDataset(slides, prompts)
        self.out_dir = Path(out_dir)
        self.options = options or SegmentOptions()
        self.overwrite = overwrite
        self.resume = resume

    def predict_dataloader(self) -> DataLoader:
        """The slides of the current rank, one per batch."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        sampler = SlideShardSampler(len(self.dataset), rank, world)
        return DataLoader(self.dataset, batch_size=1, sampler=sampler, collate_fn=_single, num_workers=0)

    def predict_step(self, batch: tuple[int, Path, Path | None], batch_idx: int) -> dict[str, Any]:
        """Segment one slide; a failure is reported in the result, not raised (other slides go on)."""
        index, slide, prompts = batch
        segmenter = SlideSegmenter(self.segment_model, self.options, device=self.device, autocast=False)
        try:
            result = segmenter.segment(slide, self.out_dir, prompts, overwrite=self.overwrite, resume=self.resume)
        except Exception as exc:  # noqa: BLE001 - one slide's failure must not stop the rank
            return {"index": index, "slide": str(slide), "status": "failed", "error": " ".join(str(exc).split())}
        return {
            "index": index,
            "slide": str(slide),
            "status": result.status,
            "tiles": result.tiles,
            "outputs": [str(p) for p in result.outputs.finals()],
            "warnings": result.warnings,
        }


class SlidePredictionWriter(BasePredictionWriter):
    """Append each slide's result as a JSON line to ``<out>/segment_results.rank<r>.jsonl``."""

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)

    def path_for(self, rank: int) -> Path:
        """The results file of ``rank``."""
        return self.out_dir / f"segment_results.rank{rank}.jsonl"

    def write_on_batch_end(  # noqa: D102
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path_for(trainer.global_rank), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(prediction, sort_keys=True) + "\n")
