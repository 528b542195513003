"""/proc readings of real processes: this one, a zombie child, one that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from service.procs import stat_fields, zombie

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")


def test_this_process_is_alive_and_its_parent_is_read() -> None:
    fields = stat_fields(os.getpid())
    assert fields is not None and not zombie(fields)
    assert int(fields[1]) == os.getppid()


def test_a_child_that_exited_unreaped_is_a_zombie() -> None:
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while (fields := stat_fields(child.pid)) is not None and not zombie(fields):
            assert time.monotonic() < deadline, fields
            time.sleep(0.01)
        assert fields is not None and zombie(fields)
    finally:
        child.wait()
    assert stat_fields(child.pid) is None  # reaped: gone


def test_no_such_process() -> None:
    assert stat_fields(2**22 + 1) is None  # above Linux's largest pid
