"""Read the records of an offline W&B run file (``run-<id>.wandb``) for tests.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type FULL/FIRST/MIDDLE/LAST).
The wandb package no longer ships a Python reader, so this small one parses it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_HEADER = 7
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[pb.Record]:
    """Yield every protobuf ``Record`` in an offline run file."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            break
        if kind in (_FULL, _FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (_FULL, _LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            yield rec


def config_keys(path: Path) -> dict[str, str]:
    """Config items logged to the run, key -> JSON value."""
    out: dict[str, str] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "config":
            out.update({u.key: u.value_json for u in rec.config.update})
    return out


def history_keys(path: Path) -> set[str]:
    """Every metric key logged in the run's history."""
    keys: set[str] = set()
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            keys.update(item.key or "/".join(item.nested_key) for item in rec.history.item)
    return keys
