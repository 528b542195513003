"""How the service divides the cores it may use among worker processes and ONNX Runtime threads.

`python -m service` computes the layout once, before it starts the workers, and hands it to them
in their environment (`Layout.environ`): a worker's own `Layout.of` then finds every number
already set and agrees with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.settings import Settings

MAX_DEFAULT_WORKERS = 4


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


@dataclass(frozen=True)
class Layout:
    workers: int  # uvicorn worker processes
    threads: int  # ONNX Runtime intra-op threads per worker
    lone_threads: int  # threads of each CPU model's lone-image session; 0: no such session
    cores: int  # the cores the process may use

    @classmethod
    def of(cls, settings: Settings, cores: int | None = None, board: bool | None = None) -> Layout:
        """The layout for `cores` (default: those this process may use).

        Workers and threads: the server's own work (HTTP, decoding, JSON) holds one core per
        process at load, so small models serve most from one worker per core with one ORT
        thread each (docs/benchmarks.md); repository control needs a single process, which then
        gives ORT every core. Explicit MIMO_WORKERS / MIMO_THREADS win; threads are never more
        than the cores divided among the workers.

        Lone-image threads: MIMO_LONE_THREADS when set; else every core when several workers
        divide them, but only with the board that says whether the other workers compute
        (service/cores.py; `board`: there is one, default: MIMO_CORES_BOARD is set), so that a
        lone image never takes cores another worker is using. None when that is no more than
        a batch gets anyway.
        """
        cores = cores or usable_cores()
        board = settings.cores_board is not None if board is None else board
        default_workers = 1 if settings.model_control == "explicit" else MAX_DEFAULT_WORKERS
        workers = settings.workers or min(cores, default_workers)
        threads = settings.threads or max(1, cores // workers)
        wanted = settings.lone_threads or (cores if workers > 1 and board else 0)
        return cls(workers, threads, wanted if wanted > threads else 0, cores)

    @property
    def core_per_worker(self) -> bool:
        """Does each worker have a core to itself and no more (one ONNX Runtime thread, at
        least as many workers as cores)? Its fast batches then run on its event loop
        (service/batching.py): a second thread would only take turns with the loop on that
        core. With more cores than workers, the inference thread lets the loop read and decode
        the next requests while the model runs on the other cores."""
        return self.threads == 1 and self.workers >= self.cores

    def environ(self) -> dict[str, str]:
        """The settings that give a worker process this layout."""
        return {"MIMO_WORKERS": str(self.workers), "MIMO_THREADS": str(self.threads)}
