"""service/cores.py: workers see each other's forward passes on the shared board."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT

from service.cores import SLOTS, CoresBoard, create_board

# Workers are siblings (children of uvicorn's supervisor): so are these two, children of pytest.
HOLD = """
import sys
from pathlib import Path
from service.cores import CoresBoard
with CoresBoard(Path(sys.argv[1])).busy() as others:
    print("busy", others, flush=True)
    sys.stdin.read()  # until the test closes the pipe
"""
CHECK = """
import sys
from pathlib import Path
from service.cores import CoresBoard
board = CoresBoard(Path(sys.argv[1]))
with board.busy() as others:
    print(others, board.others_busy())
"""


def check(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_a_worker_sees_another_computing(tmp_path: Path) -> None:
    path = tmp_path / "cores.board"
    create_board(path)
    assert check(path) == "False False"
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "busy False\n"
        assert check(path) == "True True"  # a sibling in a pass: no lone session on all cores
    finally:
        other.communicate(timeout=30)
    assert check(path) == "False False"  # its count came down with its pass


def test_own_passes_and_no_board(tmp_path: Path) -> None:
    path = tmp_path / "cores.board"
    create_board(path)
    board = CoresBoard(path)
    with board.busy() as others, board.busy() as still:  # the thread's pass and the loop's
        assert not others and not still and not board.others_busy()
    board.close()
    alone = CoresBoard(None)  # one process: nobody else, and busy() only says so
    with alone.busy() as others:
        assert not others and not alone.others_busy()


def test_slots_of_dead_workers_are_reused(tmp_path: Path) -> None:
    path = tmp_path / "cores.board"
    create_board(path)
    view = memoryview(bytearray(path.read_bytes())).cast("i")
    view[0], view[SLOTS] = 2**31 - 1, 1  # a pid that is no sibling, its count left up
    path.write_bytes(view.tobytes())
    assert check(path) == "False False"  # the stale count went with the slot
