"""Which worker processes are running a forward pass right now, on a small shared board.

A lone image may take every core (the model's lone session, service/registry.py) only while no
other worker computes: two workers each running two ONNX Runtime threads on two cores slowed
a heavy model by 10 % at two clients in flight. `python -m service` creates the board file for
its workers (MIMO_CORES_BOARD); each worker claims a slot for its pid and raises its flag
around every forward pass. Without a board (one process) nobody else is ever busy.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from service.procs import stat_fields, zombie

SLOTS = 64  # worker processes a board holds; more than the layout ever starts
_SIZE = 2 * SLOTS * 4  # int32 pids, then int32 counts of passes running


def create_board(path: Path) -> None:
    """A fresh board for a new set of workers."""
    path.write_bytes(bytes(_SIZE))


def _sibling(pid: int) -> bool:
    """Is `pid` a live process with this one's parent (another worker of the same server)? A
    dead worker's pid reused by some other process must not hold its slot."""
    fields = stat_fields(pid)
    return fields is not None and not zombie(fields) and int(fields[1]) == os.getppid()


class CoresBoard:
    def __init__(self, path: Path | None) -> None:
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._slot = -1
        # This worker's passes: the inference thread's, and a lone image's on the event loop.
        self._lock = threading.Lock()
        if path is None:
            return
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), _SIZE)
            view = memoryview(self._map).cast("i")
            fcntl.flock(file, fcntl.LOCK_EX)  # claiming a slot: one worker at a time
            try:
                pid, pids = os.getpid(), view[:SLOTS].tolist()
                slot = (
                    pids.index(pid)
                    if pid in pids
                    else next((i for i, p in enumerate(pids) if not p or not _sibling(p)), -1)
                )
                if slot >= 0:  # (a full board: this worker never counts as busy)
                    view[slot] = pid
                    view[SLOTS + slot] = 0  # a dead worker's count may have stayed up
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)
        self._view, self._slot = view, slot

    def others_busy(self) -> bool:
        """Is another worker in a forward pass?"""
        view, slot = self._view, self._slot
        if view is None:
            return False
        return any(view[SLOTS : SLOTS + slot]) or any(view[SLOTS + slot + 1 :])

    @contextlib.contextmanager
    def busy(self) -> Iterator[bool]:
        """Count this worker as computing for the block; yields whether another worker already
        was. This worker's count goes up first, so two workers that start together both see
        the other (and neither takes every core)."""
        view, slot = self._view, self._slot
        if view is None or slot < 0:
            yield self.others_busy()
            return
        with self._lock:
            view[SLOTS + slot] += 1
        try:
            yield self.others_busy()
        finally:
            with self._lock:
                view[SLOTS + slot] -= 1

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None
