"""What Linux's /proc says of a process: the workers' liveness checks read it."""

from __future__ import annotations

from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state, parent pid, ...); None when unreadable
    (no such process, or no /proc)."""
    try:
        # the command name, in parentheses, may itself hold spaces and ")"
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def zombie(fields: list[str]) -> bool:
    """Dead but not reaped by its parent yet."""
    return fields[0] == "Z"
