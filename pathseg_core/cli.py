"""The ``pathseg`` command: LightningCLI subcommands plus ``plugins`` and ``segment``.

``fit | validate | test | predict`` are LightningCLI; ``pathseg plugins list|doctor`` and
``pathseg segment`` are pathseg's own.

``--model NAME`` with a registered short name is rewritten to the plugin's task class
path before LightningCLI parses, importing only that plugin; full class paths work as
LightningCLI always allows. Errors that pathseg itself raises for bad input end the
process with one line on stderr and exit code 2 (set ``PATHSEG_DEBUG=1`` for the
traceback).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

from pathseg_core import _torchvision_ops  # noqa: F401 - arms the torchvision fix first

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
USAGE = """usage: pathseg {fit,validate,test,predict} --model NAME [-c CONFIG.yaml] [--trainer.* …]
       pathseg segment SLIDE… --model NAME --ckpt PATH --out DIR [options]
       pathseg plugins {list,doctor}
Run `pathseg fit --help` (or validate/test/predict/segment) for all options."""


def rewrite_model_argument(argv: list[str]) -> list[str]:
    """Resolve ``--model NAME`` to its task class path and let it win over ``-c`` configs.

    ``pathseg fit --model wsisam -c config.yaml`` means "wsisam, configured by that file", so
    the ``--model`` pair moves after the last config file; jsonargparse then keeps the
    config's ``init_args`` that the chosen class accepts.
    """
    from pathseg_core.plugins import registry

    out = list(argv)
    model: list[str] = []
    for i, arg in enumerate(out):
        if arg == "--model" and i + 1 < len(out):
            model = ["--model", _resolve(out[i + 1], registry())]
            del out[i : i + 2]
            break
        if arg.startswith("--model="):
            model = ["--model=" + _resolve(arg.split("=", 1)[1], registry())]
            del out[i]
            break
    if not model:
        return out
    insert_at = 1 if out and not out[0].startswith("-") else 0
    for i, arg in enumerate(out):
        if arg in ("-c", "--config") and i + 1 < len(out):
            insert_at = i + 2
        elif arg.startswith("--config="):
            insert_at = i + 1
    return out[:insert_at] + model + out[insert_at:]


def _resolve(value: str, reg: object) -> str:
    if value.endswith((".yaml", ".yml", ".json")) or value.startswith("{"):
        return value  # a model config file or inline dict: LightningCLI handles it
    path = reg.resolve_task_path(value)
    reg.resolve_task_class(path)  # import now so an import error is reported cleanly
    return path


def build_cli(args: Sequence[str] | None, run: bool = True) -> object:
    """Construct the LightningCLI (tests call this with ``run=False`` to inspect it)."""
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.cli import LightningCLI

    from pathseg_core.callbacks import LogConfigCallback, OverlayImages
    from pathseg_core.task import SegmentationTask

    # We always pass the (rewritten) argv explicitly; Lightning warns about that by default.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")

    class PathsegCLI(LightningCLI):
        """LightningCLI whose default rich progress bar steps aside for ``--trainer.enable_progress_bar false``."""

        def instantiate_trainer(self, **kwargs: object) -> object:  # noqa: D102
            trainer_cfg = self._get(self.config_init, "trainer", default={}) or {}
            if trainer_cfg.get("enable_progress_bar") is False:
                self.trainer_defaults = {
                    **self.trainer_defaults,
                    "callbacks": [c for c in self.trainer_defaults["callbacks"] if not isinstance(c, RichProgressBar)],
                }
            return super().instantiate_trainer(**kwargs)

    return PathsegCLI(
        SegmentationTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LogConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RichProgressBar(leave=True), OverlayImages()]},
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
        seed_everything_default=0,
    )


def is_user_error(exc: BaseException) -> bool:
    """Bad input that deserves one line, not a traceback: pathseg's own errors and missing files."""
    module = type(exc).__module__ or ""
    ours = module.startswith("pathseg")
    return ours or isinstance(exc, (FileNotFoundError, NotADirectoryError, PermissionError))


def fail(exc: BaseException) -> int:
    """Print ``pathseg: error: <one line>`` and return the exit code 2."""
    if os.environ.get("PATHSEG_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"pathseg: error: {message}", file=sys.stderr)
    return 2


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point returning an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    if command == "plugins":
        from pathseg_core.plugin_report import main as plugins_main

        return plugins_main(argv[1:])
    if command == "segment":
        from pathseg_core.inference.segment_cli import main as segment_main

        return segment_main(argv[1:])
    if command not in LIGHTNING_SUBCOMMANDS:
        print(f"pathseg: error: unknown command '{command}'; use fit, validate, test, predict, segment or plugins",
              file=sys.stderr)
        return 2
    try:
        build_cli(rewrite_model_argument(argv))
    except SystemExit as exc:  # argparse / jsonargparse errors already printed their line
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001
        if is_user_error(exc) or is_user_error(exc.__cause__ or exc):
            return fail(exc)
        raise
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
