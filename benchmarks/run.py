"""``make bench``: run every ``benchmarks/bench_*.py``, print one section each and a final table.

Each benchmark module has a ``main()`` (called without arguments). When it returns a
list of result rows, they go into the final table and into ``bench_out/results.json``
(a plain ``{name: number}`` dict becomes ``info`` rows). A row is a dict with these keys
(missing ones print as ``-``):

* ``bench``, ``metric``: what was measured;
* ``value``, ``unit``: the measurement;
* ``baseline``, ``baseline_name``: the same quantity of the baseline, measured in the same run;
* ``ratio``: usually ``value / baseline``;
* ``floor``, ``direction`` (``">="`` or ``"<="``): the target the ratio is held to;
* ``status``: ``PASS`` / ``MISS`` against the floor, ``info`` without one.

A missed floor is reported, not fatal: the exit code is non-zero only when a benchmark
raised (its traceback is printed and the others still run).

Usage: ``python benchmarks/run.py [--only NAME …] [--out bench_out]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
COLUMNS = ("bench", "metric", "value", "baseline", "ratio", "floor", "status")


def discover(folder: Path = HERE) -> list[Path]:
    """The ``bench_*.py`` files of ``folder``, sorted by name."""
    return sorted(folder.glob("bench_*.py"))


def load(path: Path) -> ModuleType:
    """Import a benchmark file as a top-level module named after it (its folder goes on ``sys.path``)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def as_rows(bench: str, result: object) -> list[dict]:
    """Result rows of a ``main()`` return value: a list of row dicts as is; a dict of numbers as ``info`` rows."""
    if isinstance(result, list):
        return [r for r in result if isinstance(r, dict)]
    if isinstance(result, dict):
        return [
            {"bench": bench, "metric": str(k), "value": float(v), "status": "info"}
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    return []


def run_one(path: Path) -> dict:
    """Import ``path`` and call its ``main()``; returns ``{"rows", "error", "seconds"}`` (never raises)."""
    t0 = time.perf_counter()
    rows: list[dict] = []
    error = None
    try:
        main: Callable[[], object] = load(path).main
        result = main()
        rows = as_rows(path.stem.removeprefix("bench_"), result)
    except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
    return {"rows": rows, "error": error, "seconds": time.perf_counter() - t0}


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[dict]) -> str:
    """Rows as an aligned text table: value and baseline with units, ratio, floor, status."""
    lines = []
    for r in rows:
        unit = f" {r['unit']}" if r.get("unit") else ""
        base = "-" if r.get("baseline") is None else f"{_fmt(r['baseline'])}{unit} ({r.get('baseline_name') or '?'})"
        floor = "-" if r.get("floor") is None else f"{r.get('direction', '>=')} {_fmt(r['floor'])}"
        lines.append(
            (
                _fmt(r.get("bench")),
                _fmt(r.get("metric")),
                f"{_fmt(r.get('value'))}{unit}",
                base,
                _fmt(r.get("ratio")),
                floor,
                _fmt(r.get("status")),
            )
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print sections, the table, write ``results.json``; 1 if any benchmark raised."""
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these (e.g. segment for bench_segment.py)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="where results.json goes (default bench_out)")
    p.add_argument("--folder", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    paths = discover(args.folder)
    if args.only:
        wanted = {n.removeprefix("bench_").removesuffix(".py") for n in args.only}
        paths = [q for q in paths if q.stem.removeprefix("bench_") in wanted]
    if not paths:
        print(f"no benchmarks to run in {args.folder}", file=sys.stderr)
        return 1
    results = {}
    for path in paths:
        print(f"\n=== {path.stem} ===", flush=True)
        results[path.stem] = run_one(path)
        res = results[path.stem]
        state = "FAILED" if res["error"] else "done"
        print(f"=== {path.stem}: {state} in {res['seconds']:.0f} s ===", flush=True)
    rows = [r for res in results.values() for r in res["rows"]]
    print("\n" + table(rows) if rows else "\n(no result rows)")
    failed = [name for name, res in results.items() if res["error"]]
    missed = [r for r in rows if r.get("status") == "MISS"]
    print(
        f"\n{len(rows)} results, {len(missed)} floors missed, {len(failed)} benchmarks failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.machine(),
        },
        "benchmarks": results,
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"results written to {args.out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
