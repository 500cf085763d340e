"""Lightning does the scale-out: DDP on two CPU processes, bf16-mixed, W&B offline, sweeps."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from tests.cli_helpers import REPO, find_checkpoint, quick_args, run_pathseg
from tests.wandb_records import config_keys, history_keys


def test_ddp_two_cpu_processes_agree_and_reduce_metrics(tmp_path):
    probe = tmp_path / "probe"
    out = run_pathseg(
        "fit",
        "--model",
        "sam",
        *quick_args(tmp_path, steps=8),
        "--trainer.limit_val_batches",
        "1.0",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.callbacks+=tests.ddp_probe.RankProbe",
        f"--trainer.callbacks.out_dir={probe}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (json.loads((probe / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["step"] == r1["step"] == 8  # 16 patches / 2 ranks / batch 2 = 4 steps an epoch
    assert r0["params"] == r1["params"], "DDP ranks diverged"
    # each rank saw half of the validation patches; synced torchmetrics give one value …
    assert r0["metrics"]["val_dice_foreground"] == r1["metrics"]["val_dice_foreground"]
    # … equal to a single process over all of them (eval prompts are seeded per image)
    ckpt = find_checkpoint(tmp_path)
    single = run_pathseg(
        "validate",
        "--model",
        "sam",
        *quick_args(tmp_path / "single"),
        "--trainer.limit_val_batches",
        "1.0",
        "--ckpt_path",
        str(ckpt),
        "--trainer.callbacks+=tests.ddp_probe.RankProbe",
        f"--trainer.callbacks.out_dir={tmp_path / 'single_probe'}",
    )
    assert single.returncode == 0, single.stderr[-3000:]
    s0 = json.loads((tmp_path / "single_probe" / "rank0.json").read_text())
    assert s0["params"] == r0["params"]
    assert abs(s0["metrics"]["val_dice_foreground"] - r0["metrics"]["val_dice_foreground"]) < 1e-6


def test_bf16_mixed_on_cpu(tmp_path):
    out = run_pathseg("fit", "--model", "sam", *quick_args(tmp_path, steps=3), "--trainer.precision", "bf16-mixed")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "train_loss" in metrics and "nan" not in metrics.lower()
    cfg = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert cfg["trainer"]["precision"] == "bf16-mixed"


def _wandb_logger_args(save_dir: Path) -> list[str]:
    return [
        "--trainer.logger",
        "lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.init_args.offline",
        "true",
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        "--trainer.logger.init_args.project",
        "pathseg-tests",
    ]


def _offline_run(save_dir: Path) -> Path:
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    assert runs, f"no offline W&B run under {save_dir}"
    return runs[-1]


def test_wandb_offline_logs_config_metrics_and_overlays(tmp_path):
    args = quick_args(tmp_path, steps=8)
    i = args.index("--trainer.logger.init_args.save_dir")
    del args[i : i + 2]  # the CSV logger's option; W&B replaces it
    out = run_pathseg(
        "fit",
        "--model",
        "sam",
        *args,
        *_wandb_logger_args(tmp_path),
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = _offline_run(tmp_path)
    run_file = next(run_dir.glob("run-*.wandb"))
    full_config = json.loads(config_keys(run_file)["config"])  # the whole resolved CLI config
    assert full_config["model"]["class_path"] == "pathseg_sam.task.SamTask"
    assert full_config["data"]["class_path"].endswith("PatchFolderDataModule")
    assert {"val_dice_foreground", "val_iou_foreground", "train_loss", "val_overlays/count"} <= history_keys(run_file)
    overlays = list((run_dir / "files" / "media" / "images").glob("val_overlays_*.png"))
    assert overlays, "no overlay images logged"


def test_sweep_command_runs_as_an_agent_would(tmp_path):
    sweep = yaml.safe_load((REPO / "examples" / "configs" / "sweep_sam_ocdc.yaml").read_text())
    # The agent replaces ${args} by --name=value for each parameter it picked; take the first values.
    picked = {name: spec["values"][0] for name, spec in sweep["parameters"].items()}
    args = [f"--{name}={value}" for name, value in picked.items()]
    command: list[str] = []
    for token in sweep["command"]:
        command.extend(args if token == "${args}" else [token])
    assert command[0] == "pathseg"
    # the exact line, run from the repo root as the agent would, with tests' quick limits appended
    line = command[1:] + [
        "--trainer.max_steps=4",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    out = run_pathseg(*line, env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert out.returncode == 0, shlex.join(command) + "\n" + out.stderr[-3000:]
    assert _offline_run(tmp_path)
