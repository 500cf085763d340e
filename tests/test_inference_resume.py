"""Resume: the journal survives torn writes; an interrupted run (SIGKILL included) resumes to identical bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pathseg_core.inference.journal import ResumeError, ResumeJournal
from pathseg_core.inference.segment_cli import main
from tests._segment_models import CMU_RELATIVE, SaturationTask, make_small_slide, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
MODEL = "tests._segment_models.SaturationTask"
OUTPUTS = ("{}.tiff", "{}.geojson", "{}.overlay.png")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(SaturationTask(), tmp_path_factory.mktemp("ckpt") / "sat.ckpt")


def _outputs(folder: Path, name: str) -> list[bytes]:
    return [(folder / p.format(name)).read_bytes() for p in OUTPUTS]


# ------------------------------------------------------------------ the journal
def _bands(n: int) -> list[np.ndarray]:
    return [np.full((3, 5), k, np.uint8) for k in range(n)]


def test_journal_resumes_after_the_last_complete_band(tmp_path) -> None:
    sig = {"slide": "a", "settings": {"tile_size": 64}}
    j = ResumeJournal(tmp_path / "w", sig)
    assert j.start(resume=False) == 0
    for k, ids in enumerate(_bands(3)):
        j.commit(k, ids, {"top": np.asarray(3 * (k + 1)), "data": np.full((2, 1, 5), k, np.float32)})
    assert sorted(p.name for p in (tmp_path / "w").iterdir() if p.name.startswith("carry")) == ["carry_00002.npz"]
    again = ResumeJournal(tmp_path / "w", sig)
    assert again.start(resume=True) == 3
    np.testing.assert_array_equal(again.load_band(1), _bands(3)[1])
    carry = again.load_carry(2)
    assert int(carry["top"]) == 9 and carry["data"].dtype == np.float32 and (carry["data"] == 2).all()
    # without resume the folder starts over
    assert ResumeJournal(tmp_path / "w", sig).start(resume=False) == 0
    assert not (tmp_path / "w" / "band_00000.npy.z").exists()


def test_journal_ignores_torn_lines_and_damaged_bands(tmp_path) -> None:
    sig = {"slide": "a"}
    j = ResumeJournal(tmp_path / "w", sig)
    j.start(resume=False)
    for k, ids in enumerate(_bands(3)):
        j.commit(k, ids, {"top": np.asarray(0), "data": np.zeros((1, 0, 5), np.float32)})
    with open(j.journal_path, "ab") as fh:
        fh.write(b'{"band": 3, "sha')  # killed while appending
    (tmp_path / "w" / "carry_00001.npz").write_bytes(b"stale")  # killed before the old carry was removed
    again = ResumeJournal(tmp_path / "w", sig)
    assert again.start(resume=True) == 3
    assert not (tmp_path / "w" / "carry_00001.npz").exists()
    again.commit(3, _bands(4)[3], {"top": np.asarray(0), "data": np.zeros((1, 0, 5), np.float32)})
    assert ResumeJournal(tmp_path / "w", sig).start(resume=True) == 4
    # a band file that no longer matches its hash ends the usable prefix (and its carry is needed)
    (tmp_path / "w" / "band_00002.npy.z").write_bytes(b"garbage")
    assert ResumeJournal(tmp_path / "w", sig).start(resume=True) == 1


def test_journal_refuses_another_runs_state(tmp_path) -> None:
    ResumeJournal(tmp_path / "w", {"slide": "a", "settings": {"overlap": 8}}).start(resume=False)
    with pytest.raises(ResumeError, match=r"differs in: settings\); rerun with --overwrite"):
        ResumeJournal(tmp_path / "w", {"slide": "a", "settings": {"overlap": 16}}).start(resume=True)


# ------------------------------------------------------------------ interrupted runs
class _Crash(RuntimeError):
    pass


def test_interrupted_run_resumes_to_identical_outputs(tmp_path, ckpt, monkeypatch, capsys) -> None:
    slide = make_small_slide(tmp_path / "small.tif")
    args = [str(slide), "--model", MODEL, "--ckpt", str(ckpt), "--tile-size", "96", "--overlap", "16", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "ref"), "--batch-size", "3"]) == 0
    reference = _outputs(tmp_path / "ref", "small")

    from pathseg_core.inference import journal as journal_module

    commit = journal_module.ResumeJournal.commit

    def crash_on_band_3(self: ResumeJournal, k: int, ids: np.ndarray, carry: dict) -> None:
        if k == 3:
            raise _Crash("simulated crash")
        commit(self, k, ids, carry)

    monkeypatch.setattr(journal_module.ResumeJournal, "commit", crash_on_band_3)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "run"), "--batch-size", "3"]) == 1
    assert "simulated crash" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("*.partial")) and not (tmp_path / "run" / "small.tiff").exists()
    assert ResumeJournal(tmp_path / "run" / ".small.work", {}).journal_path.read_text().count('"band"') == 3
    monkeypatch.setattr(journal_module.ResumeJournal, "commit", commit)
    # the state left behind is refused without --resume, and with other settings
    assert main([*args, "--out", str(tmp_path / "run")]) == 1
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "run"), "--resume", "--overlap", "8"]) == 1
    assert "differs in: settings, units" in capsys.readouterr().err
    # batches run across bands, so the batch size is part of the run's identity
    assert main([*args, "--out", str(tmp_path / "run"), "--resume", "--batch-size", "2"]) == 1
    assert "differs in: settings" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "run"), "--resume", "--batch-size", "3"]) == 0
    assert _outputs(tmp_path / "run", "small") == reference
    assert not (tmp_path / "run" / ".small.work").exists()
    # resuming a finished slide skips it
    assert main([*args, "--out", str(tmp_path / "run"), "--resume"]) == 0


@pytest.mark.parametrize("batch", [3, 7])
def test_batches_span_bands_and_resume_exactly_from_every_band(tmp_path, ckpt, monkeypatch, capsys, batch) -> None:
    """A crash at any band commit resumes to the uninterrupted bytes, whichever batch it stopped in."""
    from pathseg_core.inference import engine
    from pathseg_core.inference import journal as journal_module

    slide = make_small_slide(tmp_path / "small.tif")
    args = [str(slide), "--model", MODEL, "--ckpt", str(ckpt), "--tile-size", "96", "--overlap", "16", "--quiet"]
    args += ["--batch-size", str(batch)]
    sizes: list[int] = []
    predict = engine.SlideSegmenter._predict

    def spy(self, images, contexts, units, n_classes):  # noqa: ANN001, ANN202
        sizes.append(len({u.band for u in units}))
        return predict(self, images, contexts, units, n_classes)

    monkeypatch.setattr(engine.SlideSegmenter, "_predict", spy)
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    assert max(sizes) > 1, "no batch ran across a band border: the test would not exercise the carry"
    reference = _outputs(tmp_path / "ref", "small")
    n_bands = None
    commit = journal_module.ResumeJournal.commit
    crashed_at: list[int] = []

    for k in range(64):
        def crash(self: ResumeJournal, band: int, ids: np.ndarray, carry: dict, k: int = k) -> None:
            if band == k:
                raise _Crash("simulated crash")
            commit(self, band, ids, carry)

        out = tmp_path / f"run{k}"
        monkeypatch.setattr(journal_module.ResumeJournal, "commit", crash)
        if main([*args, "--out", str(out)]) == 0:  # band k does not exist: every band was covered
            n_bands = k
            break
        crashed_at.append(k)
        monkeypatch.setattr(journal_module.ResumeJournal, "commit", commit)
        assert main([*args, "--out", str(out), "--resume"]) == 0
        assert _outputs(out, "small") == reference, f"resume after a crash at band {k} changed the outputs"
    assert n_bands is not None and n_bands >= 4 and crashed_at == list(range(n_bands))
    capsys.readouterr()


def test_sigkilled_cli_run_resumes_byte_identical_on_the_real_slide(tmp_path, ckpt, data_root, capsys) -> None:
    slide = data_root / CMU_RELATIVE
    name = slide.stem
    args = [str(slide), "--model", MODEL, "--ckpt", str(ckpt), "--tile-size", "256", "--overlap", "32", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "ref"), "--batch-size", "4"]) == 0
    reference = _outputs(tmp_path / "ref", name)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATHSEG_TEST_SLEEP_S": "0.4"}
    cmd = [sys.executable, "-m", "pathseg_core", "segment", *args, "--out", str(out), "--batch-size", "4"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / f".{name}.work" / "journal.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count('"band"') >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / f"{name}.tiff").exists()

    capsys.readouterr()
    assert main([*args, "--out", str(out), "--resume", "--batch-size", "4"]) == 0
    assert "resumed after" in capsys.readouterr().err
    assert _outputs(out, name) == reference
    assert not list(out.glob("*.partial")) and not (out / f".{name}.work").exists()
