"""The one way these tests run a benchmark: as its users do, `python -m benchmarks.NAME` from
the repository root, in a process of its own, its output and the JSON it wrote read back.

In a process of its own, never imported here: pytest's path has tests/ on it, where the name
`benchmarks` is this folder.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import ROOT


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str
    result: Any  # the JSON written to `out`, when one was asked for

    @property
    def output(self) -> str:
        """The end of what it printed, to explain a failure."""
        return self.stdout[-3000:] + self.stderr[-3000:]


class Scripts:
    """The benchmarks as modules: `name` is the part after `benchmarks.`, as in `gpu.grid`."""

    def command(self, name: str, *args: str) -> list[str]:
        return [sys.executable, "-m", f"benchmarks.{name}", *args]

    def run(
        self,
        name: str,
        *args: str,
        out: Path | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> Ran:
        """Run it to the end (`--out=<out>` added when given); with `check`, it must succeed."""
        command = self.command(name, *args, *([f"--out={out}"] if out else []))
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        ran = Ran(done.returncode, done.stdout, done.stderr, None)
        assert not check or done.returncode == 0, ran.output
        if out is None or done.returncode != 0:
            return ran
        return dataclasses.replace(ran, result=json.loads(out.read_text()))


@pytest.fixture(scope="session")
def scripts() -> Scripts:
    return Scripts()
