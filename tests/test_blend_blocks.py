"""Column-blocked blending: settling a band early changes no class id and frees the settled columns."""

from __future__ import annotations

import numpy as np
import pytest

from pathseg_core.inference.blend import BandAccumulator, BlendError, blend_window


def _grid_run(width: int, height: int, tile: int, overlap: int, block: int, settle: bool, seed: int = 0):
    """Blend random tiles of a grid band by band; returns the class ids and the largest live score array."""
    rng = np.random.default_rng(seed)
    stride = tile - overlap
    window = blend_window(tile, overlap)
    acc = BandAccumulator(width, 3, block=block)
    cols = list(range(0, max(width - overlap, 1), stride))
    bands, live = [], 0
    for y in range(0, max(height - overlap, 1), stride):
        upto = height if y + tile >= height else y + stride
        for x in cols:
            if settle:
                acc.settle(upto, x)
            acc.add(rng.random((3, tile, tile), dtype=np.float32), y, x, weight=window)
            live = max(live, sum(b.buf.size for b in acc.blocks))
        bands.append(acc.finish(upto))
        if upto == height:
            break
    return np.concatenate(bands), live


@pytest.mark.parametrize("block", [1, 7, 32, 10_000])
def test_settling_early_gives_the_same_ids(block: int) -> None:
    plain, _ = _grid_run(203, 150, 40, 8, block=10_000, settle=False)
    blocked, _ = _grid_run(203, 150, 40, 8, block=block, settle=True)
    assert plain.shape == (150, 203)
    np.testing.assert_array_equal(blocked, plain)


def test_settled_columns_free_their_scores() -> None:
    _, whole = _grid_run(2000, 200, 40, 8, block=10_000, settle=False)
    _, blocked = _grid_run(2000, 200, 40, 8, block=32, settle=True)
    # whole width × tile rows vs a window of a few blocks around the tile + the carried overlap rows
    assert whole >= 3 * 40 * 2000
    assert blocked <= 3 * (40 * (40 + 2 * 32) + 8 * 2000) * 1.05


def test_settled_columns_refuse_late_tiles_and_state_needs_a_finished_band() -> None:
    acc = BandAccumulator(100, 2, block=10)
    acc.add(np.ones((2, 20, 20), np.float32), 0, 30)
    acc.settle(16, 30)
    with pytest.raises(BlendError, match="already settled"):
        acc.add(np.ones((2, 20, 20), np.float32), 0, 25)
    with pytest.raises(BlendError, match="middle of a band"):
        acc.state()
    with pytest.raises(BlendError, match="pending"):
        acc.settle(12, 40)
    ids = acc.finish(16)
    assert ids.shape == (16, 100) and acc.top == 16
    again = BandAccumulator.from_state(acc.state(), 100, 2, block=7)
    np.testing.assert_array_equal(again.data, acc.data)


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_argmax_channels_is_numpy_argmax_with_ties_to_the_lowest(channels: int) -> None:
    from pathseg_core.inference.blend import argmax_channels

    rng = np.random.default_rng(channels)
    scores = np.round(rng.random((channels, 37, 53), dtype=np.float32) * 4) / 4  # many ties
    scores[:, :, :5] = 0.25  # all channels equal: class 0
    out = np.full((37, 53), 99, np.uint8)
    argmax_channels(scores, out)
    np.testing.assert_array_equal(out, np.argmax(scores, axis=0))
