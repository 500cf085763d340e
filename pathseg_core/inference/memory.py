"""Keep the C heap of a long streaming run from growing with the number of bands.

glibc's ``malloc`` serves blocks above its *mmap threshold* with a fresh ``mmap`` and
returns them to the kernel on ``free``. By default that threshold is dynamic: each time a
mapped block is freed, it rises to that block's size (up to 32 MiB), so from then on the
model's multi-megabyte activations and the band-sized NumPy arrays all come from the
heap. Interleaved there, they fragment it, and the freed holes stay resident: in a
whole-slide run the peak RSS then creeps up band after band, more for wider slides, though
nothing live grows (measured: +110 MB at 16× the area of the CMU slide, +50 MB with the
threshold fixed at 1 MiB; see ``benchmarks/README.md``).

:func:`bound_heap_growth` fixes the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also
turns the dynamic adjustment off). ``pathseg segment`` calls it at start-up;
``PATHSEG_MMAP_THRESHOLD_MB=0`` leaves glibc's default. Elsewhere (macOS, musl, Windows)
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``M_MMAP_THRESHOLD`` in glibc's ``<malloc.h>``.
M_MMAP_THRESHOLD = -3
#: Default fixed threshold: blocks of 4 MiB or more are mapped and unmapped on their own.
DEFAULT_THRESHOLD_MB = 4.0
ENV = "PATHSEG_MMAP_THRESHOLD_MB"


def bound_heap_growth(threshold_mb: float | None = None) -> bool:
    """Fix glibc's mmap threshold at ``threshold_mb`` MiB (env ``PATHSEG_MMAP_THRESHOLD_MB``, default 4).

    Returns whether the setting was applied (``False`` off glibc, or when the value is 0).
    """
    if threshold_mb is None:
        raw = os.environ.get(ENV, "").strip()
        try:
            threshold_mb = float(raw) if raw else DEFAULT_THRESHOLD_MB
        except ValueError:
            raise ValueError(f"{ENV}={raw!r} is not a number of MiB (0 keeps glibc's default)") from None
    if threshold_mb <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold_mb * 2**20)))
