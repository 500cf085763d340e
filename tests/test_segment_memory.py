"""Streaming helpers of ``pathseg segment``: the read-ahead thread and the heap setting."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from pathseg_core.inference.engine import read_ahead
from pathseg_core.inference.memory import ENV, bound_heap_growth


def test_read_ahead_yields_in_order_and_reads_one_batch_ahead() -> None:
    produced: list[int] = []

    def source():  # noqa: ANN202
        for i in range(5):
            produced.append(i)
            yield i

    it = read_ahead(source())
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert produced == [0, 1]  # batch 1 is read while batch 0 is used, and no further
    assert list(it) == [1, 2, 3, 4]


def test_read_ahead_reraises_in_order_and_close_waits_for_the_reader() -> None:
    def failing():  # noqa: ANN202
        yield 0
        raise OSError("truncated tile")

    it = read_ahead(failing())
    assert next(it) == 0
    with pytest.raises(OSError, match="truncated tile"):
        next(it)

    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow():  # noqa: ANN202
        yield 0
        started.set()
        release.wait(5)
        finished.append(True)
        yield 1

    it = read_ahead(slow())
    assert next(it) == 0
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    it.close()  # must not return while the reader still runs (the slide is closed next)
    assert finished == [True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_bound_heap_growth_applies_on_glibc_and_can_be_turned_off(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "0")
    assert bound_heap_growth() is False
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(ValueError, match="PATHSEG_MMAP_THRESHOLD_MB='lots' is not a number"):
        bound_heap_growth()
    monkeypatch.delenv(ENV)
    assert bound_heap_growth(32.0) is True  # glibc's own maximum, harmless for the test process
