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
from collections.abc import Iterator
from pathlib import Path

SLOTS = 64  # worker processes a board holds; more than the layout ever starts
_SIZE = 2 * SLOTS * 4  # int32 pids, then int32 busy flags


def create_board(path: Path) -> None:
    """A fresh board for a new set of workers."""
    path.write_bytes(bytes(_SIZE))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CoresBoard:
    def __init__(self, path: Path | None) -> None:
        self._view: memoryview | None = None
        self._slot = -1
        if path is None:
            return
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), _SIZE)
            view = memoryview(self._map).cast("i")
            fcntl.flock(file, fcntl.LOCK_EX)  # claiming a slot: one worker at a time
            try:
                pid = os.getpid()
                free = [i for i in range(SLOTS) if view[i] == 0 or not _alive(view[i])]
                mine = next((i for i in range(SLOTS) if view[i] == pid), None)
                slot = mine if mine is not None else (free[0] if free else -1)
                if slot >= 0:  # (a full board: this worker never counts as busy)
                    view[slot] = pid
                    view[SLOTS + slot] = 0  # a dead worker's flag may have stayed up
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)
        self._view, self._slot = view, slot

    def others_busy(self) -> bool:
        """Is another worker in a forward pass (this one's flag is down outside `busy`)?"""
        return self._view is not None and any(self._view[SLOTS:])

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        if self._view is None or self._slot < 0:
            yield
            return
        self._view[SLOTS + self._slot] = 1
        try:
            yield
        finally:
            self._view[SLOTS + self._slot] = 0
