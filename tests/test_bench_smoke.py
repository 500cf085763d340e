"""``make bench`` code paths on a tiny workload: the segment benchmark and the runner."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
RATIO = re.compile(r"^  (?P<metric>.+?): (?P<value>\S+) (?P<unit>\S+)(?: vs .+)? → ratio (?P<ratio>\S+)")


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_segment
        import run

        yield bench_segment, run
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def tiny_slide(tmp_path_factory, data_root: Path) -> Path:
    import openslide

    from pathseg_core.testing.fixtures import write_pyramid_tiff

    with openslide.OpenSlide(str(data_root / "wsi" / "cmu1_small_region" / "CMU-1-Small-Region.svs")) as slide:
        rgb = np.asarray(slide.read_region((1000, 1200), 0, (512, 384)).convert("RGB"))
    return write_pyramid_tiff(tmp_path_factory.mktemp("bench") / "tiny.tif", rgb, mpp=0.499, tile=256, levels=2)


def _ratios(text: str) -> dict[str, float]:
    return {m["metric"]: float(m["ratio"]) for m in map(RATIO.match, text.splitlines()) if m}


def test_segment_benchmark_prints_numeric_ratios(bench_modules, tiny_slide, tmp_path, capsys) -> None:
    pytest.importorskip("monai")
    bench_segment, _ = bench_modules
    rows = bench_segment.main(
        ["--slide", str(tiny_slide), "--out", str(tmp_path), "--repeats", "1x1", "2x1"]
        + ["--tile-size", "128", "--overlap", "16", "--batch-size", "4", "--encoder-input-size", "64"]
        + ["--target-mpp", "1.0", "--train-steps", "3", "--train-tiles", "2", "--equal-batch-check", "0"]
        + ["--reader-tiles", "4", "--reader-reps", "3"]
    )
    out = capsys.readouterr().out
    ratios = _ratios(out)
    wanted = [
        "segment throughput, every window (2x1 slide)",
        "segment peak RSS, every window (2x1 slide)",
        "tissue-skipping speedup",
        "segment peak RSS at 2x area vs 1x",
        "read_region overhead (tif, level 0, 256 px)",
    ]
    for name in wanted:
        found = [v for k, v in ratios.items() if k.startswith(name)]
        assert found and all(np.isfinite(found) & (np.asarray(found) > 0)), (name, out)
    assert {r["status"] for r in rows} <= {"PASS", "MISS", "info"}
    assert all(np.isfinite(r["value"]) and r["value"] > 0 for r in rows)
    # the window counts come from the runs themselves and must agree (same grid over the same area)
    counts = re.search(r"windows pathseg (\d+) / MONAI (\d+); tissue tiles (\d+)", out)
    assert counts and counts[1] == counts[2] and 0 < int(counts[3]) <= int(counts[1]), out


def test_peak_rss_is_this_process_not_its_parent(bench_modules) -> None:
    bench_segment, _ = bench_modules
    big = np.ones(64 * 2**20 // 8)  # 64 MB resident in this process
    # the child runs the same function's source without importing torch (a fast interpreter start)
    code = (
        "import re\nfrom pathlib import Path\n" + inspect.getsource(bench_segment.peak_rss_mb) + "print(peak_rss_mb())"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert big.sum() > 0 and bench_segment.peak_rss_mb() > 64
    assert float(child.stdout.split()[-1]) < 32  # not the parent's peak, inherited through vfork/exec


def test_runner_reports_misses_and_fails_only_on_errors(bench_modules, tmp_path, capsys) -> None:
    _, run = bench_modules
    folder = tmp_path / "benches"
    folder.mkdir()
    row = {"bench": "fake", "metric": "speed", "value": 2.0, "baseline": 4.0, "baseline_name": "ref", "unit": "x/s"}
    miss = {**row, "ratio": 0.5, "floor": 1.0, "direction": ">=", "status": "MISS"}
    (folder / "bench_ok.py").write_text(f"def main():\n    print('ok section')\n    return [{miss!r}]\n")
    (folder / "bench_none.py").write_text("def main():\n    return None\n")
    (folder / "bench_dict.py").write_text("def main():\n    return {'seconds_per_image': 0.25, 'label': 'x'}\n")
    assert run.main(["--folder", str(folder), "--out", str(tmp_path / "o1")]) == 0  # a MISS is not an error
    out = capsys.readouterr().out
    assert "=== bench_ok ===" in out and "ok section" in out and "=== bench_none ===" in out
    assert re.search(r"fake\s+speed\s+2 x/s\s+4 x/s \(ref\)\s+0\.5\s+>= 1\s+MISS", out), out
    assert re.search(r"dict\s+seconds_per_image\s+0\.25\s+-\s+-\s+-\s+info", out), out
    saved = json.loads((tmp_path / "o1" / "results.json").read_text())
    assert saved["benchmarks"]["bench_ok"]["rows"][0]["status"] == "MISS"

    (folder / "bench_bad.py").write_text("def main():\n    raise RuntimeError('broken bench')\n")
    assert run.main(["--folder", str(folder), "--out", str(tmp_path / "o2")]) == 1
    captured = capsys.readouterr()
    assert "RuntimeError: broken bench" in captured.err and "1 benchmarks failed: bench_bad" in captured.out
    assert "MISS" in captured.out  # the other benchmarks still ran and were tabulated
    assert run.main(["--folder", str(folder), "--only", "ok", "--out", str(tmp_path / "o3")]) == 0
