"""`python -m service`: run the API under uvicorn with the MIMO_* settings."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from service import listen
from service.cores import create_board
from service.layout import Layout
from service.protocol import OneWriteProtocol
from service.settings import LOG_FORMAT, Settings


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"MIMO_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        print(f"mimo-serve: invalid settings: {problems}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    # One board of busy workers when there are several (below): their lone images use it.
    layout = Layout.of(settings, board=True)
    # The workers read their settings from the environment: they see the layout chosen here.
    os.environ.update(layout.environ())
    settings = settings.model_copy(update={"workers": layout.workers, "threads": layout.threads})
    sock = None
    scratch: Path | None = None  # the default metrics folder, removed when the server ends
    if settings.workers > 1 and listen.SUPPORTED:
        # One listening socket per worker, not uvicorn's shared one (service/listen.py). Bound
        # first: a second server started by mistake stops here, before it wipes the metrics
        # folder of the one that holds the port.
        try:
            sock = listen.worker_socket(settings.host, settings.port)
        except OSError as exc:
            where = f"{settings.host}:{settings.port}"
            print(f"mimo-serve: cannot listen on {where}: {exc}", file=sys.stderr)
            sys.exit(listen.STARTUP_FAILURE)
    if settings.workers > 1:
        # prometheus-client's multiprocess mode: every worker writes its samples into one
        # folder, wiped at start so totals from an earlier run do not leak in. One folder per
        # port (one server per port, see listen.py): two servers on one host would otherwise
        # wipe and add up each other's samples, and share a cores board.
        port = sock.getsockname()[1] if sock is not None else settings.port
        folder = settings.metrics_dir or Path(tempfile.gettempdir()) / f"mimo-prometheus-{port}"
        scratch = None if settings.metrics_dir else folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        board = folder / "cores.board"  # (not a *.db file: the metrics collector skips it)
        create_board(board)
        os.environ["MIMO_CORES_BOARD"] = str(board)
    logging.getLogger("mimo.service").info(
        "%d worker process(es), %d ONNX Runtime thread(s) each (%d for a lone image)",
        layout.workers,
        layout.threads,
        layout.lone_threads or layout.threads,
    )
    options = dict(
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        http=OneWriteProtocol,
    )
    try:
        if sock is None:
            uvicorn.run("service.main:create_app", **options)
            return
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d, one listening socket per worker (SO_REUSEPORT)",
            host,
            sock.getsockname()[1],
        )
        Multiprocess(uvicorn.Config("service.main:create_app", **options), sockets=[sock]).run()
    finally:
        if scratch is not None:  # (the workers have exited: their samples die with them)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
