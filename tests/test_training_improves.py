"""A short real training run of the tiny SAM baseline raises held-out Dice on OCDC tiles."""

from __future__ import annotations

from pathseg_core.cli import build_cli
from tests.cli_helpers import CONFIG


def test_dice_on_held_out_tiles_rises_after_training(tmp_path):
    args = [
        "-c",
        str(CONFIG),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.enable_model_summary",
        "false",
    ]
    cli = build_cli(args, run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    before = trainer.test(model, datamodule=dm, verbose=False)[0]["test_dice_foreground"]
    trainer.fit(model, datamodule=dm)
    best = trainer.checkpoint_callback.best_model_path
    assert best, "ModelCheckpoint kept no best model"
    after = trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)[0]["test_dice_foreground"]
    print(f"held-out test Dice (noisy box prompts): before {before:.3f} -> after {after:.3f}")
    assert after > before + 0.1, (before, after)
