"""service/settings.py: the worker and thread layout chosen for the cores present."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.mark.parametrize(
    ("cores", "overrides", "expected"),
    [
        (2, {}, (2, 1)),  # one worker per core, one ORT thread each
        (1, {}, (1, 1)),
        (16, {}, (4, 4)),  # at most 4 workers; the cores shared among them
        (8, {"model_control": "explicit", "api_key": "k"}, (1, 8)),  # control: one process
        (8, {"workers": 3}, (3, 2)),
        (8, {"workers": 1, "threads": 3}, (1, 3)),
        (2, {"threads": 2}, (2, 2)),  # an explicit thread count is taken as it is
    ],
)
def test_process_layout(
    monkeypatch: pytest.MonkeyPatch, cores: int, overrides: dict, expected: tuple[int, int]
) -> None:
    monkeypatch.delenv("MIMO_WORKERS", raising=False)
    monkeypatch.delenv("MIMO_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(**overrides).process_layout() == expected


BOARD = {"cores_board": "/run/mimo/cores.board"}


@pytest.mark.parametrize(
    ("cores", "overrides", "expected"),
    [
        (2, BOARD, 2),  # two workers of one thread: a lone image gets both cores
        (16, BOARD, 16),
        (2, {}, 0),  # no board to say whether the other worker computes: no second session
        (1, BOARD, 0),  # one worker already has every core
        (8, BOARD | {"workers": 1, "threads": 3}, 0),
        (8, {"lone_threads": 4}, 4),  # 4 workers of 2 threads, asked for 4
        (8, {"workers": 1, "threads": 3, "lone_threads": 2}, 0),  # fewer than a batch gets
    ],
)
def test_lone_image_threads(
    monkeypatch: pytest.MonkeyPatch, cores: int, overrides: dict, expected: int
) -> None:
    monkeypatch.delenv("MIMO_WORKERS", raising=False)
    monkeypatch.delenv("MIMO_THREADS", raising=False)
    monkeypatch.delenv("MIMO_LONE_THREADS", raising=False)
    monkeypatch.delenv("MIMO_CORES_BOARD", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(**overrides).lone_layout() == expected


@pytest.mark.parametrize(
    ("cores", "overrides", "expected"),
    [
        (2, {}, True),  # two workers of one thread: batches run on each worker's loop
        (1, {}, True),
        (4, {}, True),
        (16, {}, False),  # 4 workers of 4 threads: the loop decodes while the model runs
        (2, {"threads": 2}, False),
        (2, {"workers": 1, "threads": 1}, False),  # a spare core for the inference thread
        (8, {"model_control": "explicit", "api_key": "k"}, False),
    ],
)
def test_a_core_per_worker(
    monkeypatch: pytest.MonkeyPatch, cores: int, overrides: dict, expected: bool
) -> None:
    monkeypatch.delenv("MIMO_WORKERS", raising=False)
    monkeypatch.delenv("MIMO_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(**overrides).core_per_worker() is expected


def test_grpc_and_http_ports_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIMO_GRPC_PORT", raising=False)
    with pytest.raises(ValidationError, match="MIMO_GRPC_PORT=0"):
        Settings(port=9000, grpc_port=9000)
    assert Settings(port=9000, grpc_port=0).grpc_port == 0
