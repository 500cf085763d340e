"""``make demo``: a short real run of pathseg on the shared pathology data, from the CLI.

1. Held-out Dice of the *untrained* tiny SAM baseline on OCDC test tiles (noisy box prompts).
2. ``pathseg fit --model sam`` on the OCDC training tiles (tiny configuration,
   random-initialised: no weights can be downloaded here, so this is a pipeline check,
   not SAM's zero-shot quality).
3. Held-out Dice of the trained model, and overlay PNGs of the held-out tiles.
4. ``pathseg segment`` of the real CMU-1-Small-Region slide with box prompts placed on its
   tissue, writing a pyramidal TIFF, a QuPath GeoJSON and an overlay PNG.

Everything goes to ``demo_out/``.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo_out"
CONFIG = REPO / "examples" / "configs" / "sam_ocdc_tiny.yaml"


def pathseg(*args: str) -> None:
    """Run the real ``pathseg`` command (as a user would), failing loudly."""
    cmd = [sys.executable, "-m", "pathseg_core", *args]
    print("$ pathseg " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def last_metric(run_dir: Path, key: str) -> float:
    """The last logged value of ``key`` in a CSV-logger run folder."""
    rows = list(csv.DictReader((sorted(run_dir.rglob("metrics.csv"))[-1]).open()))
    return float([r[key] for r in rows if r.get(key)][-1])


def held_out_dice(name: str, *extra: str) -> float:
    """``pathseg test`` on the held-out OCDC tiles; returns foreground Dice."""
    run_dir = OUT / name
    pathseg("test", "--model", "sam", "-c", str(CONFIG), "--trainer.default_root_dir", str(run_dir),
            "--trainer.logger.init_args.save_dir", str(run_dir), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks", "[]", *extra)
    return last_metric(run_dir, "test_dice_foreground")


def write_overlays(ckpt: Path) -> list[Path]:
    """Panels ``image | truth | prediction`` for every held-out test tile."""
    import torch
    from pathseg_sam.task import SamTask
    from PIL import Image

    from pathseg_core.callbacks import render_panels
    from pathseg_core.data.patch_folder import PatchFolderDataModule

    task = SamTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    dm = PatchFolderDataModule(root="seg/ocdc", class_map="ocdc_binary", masks_dir="masks_bin_png",
                               split="spatial", val_fraction=0.2, test_fraction=0.2, patch_size=320,
                               image_size=128, batch_size=4)
    dm.setup("test")
    out_dir = OUT / "overlays"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            for i, panel in enumerate(render_panels(task, batch, len(batch))):
                path = out_dir / f"test_{batch.meta.source_id[i]}_x{batch.meta.x[i]}_y{batch.meta.y[i]}.png"
                Image.fromarray(panel).save(path)
                paths.append(path)
    return paths


def tissue_box_prompts(slide: Path, out: Path, box: int = 480, max_boxes: int = 6) -> Path:
    """QuPath GeoJSON of box prompts centred on the slide's largest tissue areas (level-0 px)."""
    import numpy as np
    import shapely
    from scipy import ndimage

    from pathseg_core.data.wsi.annotations import Annotation, write_geojson
    from pathseg_core.data.wsi.reader import SlideReader
    from pathseg_core.data.wsi.tissue import detect_tissue

    reader = SlideReader(slide)
    tissue = detect_tissue(reader)
    width, height = tissue.slide_size
    sy, sx = height / tissue.mask.shape[0], width / tissue.mask.shape[1]
    # distance to the tissue edge picks box centres well inside tissue, spread out greedily
    dist = ndimage.distance_transform_edt(tissue.mask)
    boxes = []
    for _ in range(max_boxes):
        r, c = np.unravel_index(int(dist.argmax()), dist.shape)
        if dist[r, c] <= 0:
            break
        cx, cy = (c + 0.5) * sx, (r + 0.5) * sy
        x0, y0 = min(max(cx - box / 2, 0), width - box), min(max(cy - box / 2, 0), height - box)
        boxes.append(Annotation(shapely.box(x0, y0, x0 + box, y0 + box), class_name="tumour"))
        rr, cc = np.ogrid[: dist.shape[0], : dist.shape[1]]
        dist[((rr - r) * sy) ** 2 + ((cc - c) * sx) ** 2 < (1.2 * box) ** 2] = 0
    return write_geojson(boxes, out)


def main() -> None:
    """Run the demo end to end."""
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    print("pathseg demo — tiny SAM baseline, RANDOM-INITIALISED (no pretrained weights are available here)\n")

    before = held_out_dice("test_untrained")

    fit_dir = OUT / "fit"
    pathseg("fit", "--model", "sam", "-c", str(CONFIG), "--trainer.default_root_dir", str(fit_dir),
            "--trainer.logger.init_args.save_dir", str(fit_dir))
    best = sorted(fit_dir.rglob("best-*.ckpt"))[-1]
    after = held_out_dice("test_trained", "--ckpt_path", str(best))
    overlays = write_overlays(best)

    from pathseg_core.data.paths import data_root

    slide = data_root() / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs"
    prompts = tissue_box_prompts(slide, OUT / "cmu_prompts.geojson")
    seg_dir = OUT / "segment"
    pathseg("segment", str(slide), "--model", "sam", "--ckpt", str(best), "--prompts", str(prompts),
            "--out", str(seg_dir), "--overwrite", "--target-mpp", "2.0", "--tile-size", "256")

    print("\n== pathseg demo results ==")
    print("model: sam, tiny configuration, random-initialised, mask decoder trained on OCDC training tiles")
    print(f"held-out OCDC test Dice (noisy box prompts): before training {before:.3f} -> after {after:.3f}")
    print(f"checkpoint: {best.relative_to(REPO)}")
    print(f"overlays of held-out tiles: {len(overlays)} PNGs in {(OUT / 'overlays').relative_to(REPO)}")
    print(f"CMU slide segmented with {prompts.name}: {', '.join(sorted(p.name for p in seg_dir.iterdir()))}")


if __name__ == "__main__":
    main()
