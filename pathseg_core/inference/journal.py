"""Resume journal: finished row bands cached on disk, listed in an append-only, fsync'd log.

Layout of a slide's work folder (``<out>/.<slide>.work/``)::

    journal.jsonl        line 1: {"signature": {...}}; then one {"band": k, "sha256": …} per band
    band_00000.npy.z     class ids of band 0, ``[rows, W]`` uint8 (.npy bytes, zlib-compressed)
    carry_00007.npz      blend state left open after the last finished band (only the newest)

A band file and its carry are written to a temporary name, fsync'd and renamed before
the journal line that lists them is appended and fsync'd. A process killed at any
instant (SIGKILL included) therefore leaves a journal whose complete lines name only
complete files; a torn last line is ignored. On resume the journal's signature (slide,
checkpoint, settings) must match the new run's, or resuming is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

JOURNAL = "journal.jsonl"


class ResumeError(ValueError):
    """Saved resume state that does not belong to this run or is damaged."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (all or nothing)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


class ResumeJournal:
    """The work folder of one slide: cached bands, the newest carry, and the journal.

    Args:
        folder: the work folder (created by :meth:`start`).
        signature: JSON-serialisable description of the run (slide, checkpoint,
            settings); resuming requires an equal signature.
    """

    def __init__(self, folder: str | Path, signature: dict) -> None:
        self.folder = Path(folder)
        self.signature = json.loads(json.dumps(signature, sort_keys=True))
        self.done: list[int] = []

    @property
    def journal_path(self) -> Path:
        """The append-only log file."""
        return self.folder / JOURNAL

    def band_path(self, k: int) -> Path:
        """Class-id cache of band ``k``."""
        return self.folder / f"band_{k:05d}.npy.z"

    def carry_path(self, k: int) -> Path:
        """Blend state after band ``k``."""
        return self.folder / f"carry_{k:05d}.npz"

    def start(self, resume: bool) -> int:
        """Open the folder; returns how many leading bands are already finished.

        Without ``resume`` (or with no usable journal) the folder is emptied and a new
        journal begun. With ``resume`` a journal of another run raises :class:`ResumeError`.
        """
        if resume and self.journal_path.exists():
            self.done = self._read()
            self._clean_stale()
            return len(self.done)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.done = []
        header = json.dumps({"signature": self.signature}, sort_keys=True) + "\n"
        atomic_write_bytes(self.journal_path, header.encode())
        return 0

    def _read(self) -> list[int]:
        lines = self.journal_path.read_bytes().split(b"\n")
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            raise ResumeError(
                f"resume journal {self.journal_path} is damaged (unreadable header); rerun with --overwrite"
            ) from None
        saved = header.get("signature")
        if saved != self.signature:
            keys = sorted(
                k for k in set(self.signature) | set(saved or {}) if (saved or {}).get(k) != self.signature.get(k)
            )
            raise ResumeError(
                f"resume state in {self.folder} was made by a different run (differs in: {', '.join(keys)}); "
                f"rerun with --overwrite to start again"
            )
        done: list[int] = []
        for raw in lines[1:]:
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                break  # a torn last line: the process died while appending it
            k = int(entry["band"])
            if k != len(done) or not self._band_ok(k, entry.get("sha256")):
                break
            done.append(k)
        if done and not self.carry_path(done[-1]).exists():
            done.pop()  # defensive: the carry of the last band is needed to go on
        return done

    def _band_ok(self, k: int, digest: str | None) -> bool:
        path = self.band_path(k)
        return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest

    def _clean_stale(self) -> None:
        keep = {self.band_path(k).name for k in self.done} | {JOURNAL}
        if self.done:
            keep.add(self.carry_path(self.done[-1]).name)
        for path in self.folder.iterdir():
            if path.name not in keep and (path.name.startswith(("band_", "carry_")) or path.suffix == ".tmp"):
                path.unlink()
        # rewrite the journal without a torn tail so new lines start on a fresh line
        lines = self.journal_path.read_bytes().split(b"\n")
        body = b"\n".join(lines[: 1 + len(self.done)]) + b"\n"
        atomic_write_bytes(self.journal_path, body)

    def commit(self, k: int, ids: np.ndarray, carry: dict[str, np.ndarray]) -> None:
        """Persist band ``k`` (class ids + blend carry), then log it; drops the previous carry."""
        if k != len(self.done):
            raise ResumeError(f"band {k} committed out of order (expected {len(self.done)})")
        data = zlib.compress(_npy_bytes(ids), 1)
        atomic_write_bytes(self.band_path(k), data)
        buf = io.BytesIO()
        np.savez(buf, **carry)  # float scores barely compress; zlib cost ~0.1 s a band at 9k px wide
        atomic_write_bytes(self.carry_path(k), buf.getvalue())
        line = json.dumps({"band": k, "sha256": hashlib.sha256(data).hexdigest()}) + "\n"
        with open(self.journal_path, "ab") as fh:
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
        self.done.append(k)
        if k:
            self.carry_path(k - 1).unlink(missing_ok=True)

    def load_band(self, k: int) -> np.ndarray:
        """Class ids of a finished band."""
        return np.load(io.BytesIO(zlib.decompress(self.band_path(k).read_bytes())), allow_pickle=False)

    def load_carry(self, k: int) -> dict[str, np.ndarray]:
        """Blend state saved after band ``k``."""
        with np.load(self.carry_path(k), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def remove(self) -> None:
        """Delete the work folder (after the outputs are complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)
