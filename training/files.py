"""One way to write a file that readers only ever see whole: a temporary file, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, staging: Path | None = None) -> None:
    """Write `data` to `path` so that a crash or a concurrent reader never sees half of it.

    The temporary file lies in `staging` (default: the target's folder), which must be on the
    same file system; the target's folder is created only just before the rename, so that a
    reader watching for new folders (the service's model repository) finds them complete.
    """
    path = Path(path)
    staging = path.parent if staging is None else Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=staging, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600): a service running as another user could
            # not read it. Give it the mode of an ordinary file.
            os.fchmod(f.fileno(), 0o644)
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
