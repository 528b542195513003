"""service/cores.py: workers see each other's forward passes on the shared board."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT

from service.cores import SLOTS, CoresBoard, create_board

HOLD = """
import sys
from pathlib import Path
from service.cores import CoresBoard
with CoresBoard(Path(sys.argv[1])).busy():
    print("busy", flush=True)
    sys.stdin.read()  # until the test closes the pipe
"""


def test_a_worker_sees_another_computing(tmp_path: Path) -> None:
    path = tmp_path / "cores.board"
    create_board(path)
    here = CoresBoard(path)
    assert not here.others_busy()
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "busy\n"
        assert here.others_busy()
    finally:
        other.communicate(timeout=30)
    assert not here.others_busy()  # its flag came down with its pass


def test_own_pass_and_no_board(tmp_path: Path) -> None:
    path = tmp_path / "cores.board"
    create_board(path)
    board = CoresBoard(path)
    with board.busy():
        assert board.others_busy()  # as another worker would see it
    assert not board.others_busy()
    alone = CoresBoard(None)  # one process: nobody else, and busy() is a no-op
    with alone.busy():
        assert not alone.others_busy()


def test_slots_of_dead_workers_are_reused(tmp_path: Path) -> None:
    path = tmp_path / "cores.board"
    create_board(path)
    view = memoryview(bytearray(path.read_bytes())).cast("i")
    view[0], view[SLOTS] = 2**31 - 1, 1  # a pid that is not running, its flag left up
    path.write_bytes(view.tobytes())
    board = CoresBoard(path)
    assert not board.others_busy()  # the stale flag went with the slot
