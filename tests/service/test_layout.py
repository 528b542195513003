"""service/layout.py: the worker and thread layout chosen for the cores present."""

from __future__ import annotations

import pytest

from service.layout import Layout
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
def test_workers_and_threads(
    monkeypatch: pytest.MonkeyPatch, cores: int, overrides: dict, expected: tuple[int, int]
) -> None:
    monkeypatch.delenv("MIMO_WORKERS", raising=False)
    monkeypatch.delenv("MIMO_THREADS", raising=False)
    layout = Layout.of(Settings(**overrides), cores)
    assert (layout.workers, layout.threads) == expected


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
    assert Layout.of(Settings(**overrides), cores).lone_threads == expected


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
    assert Layout.of(Settings(**overrides), cores).core_per_worker is expected


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 16])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"workers": 1}, {"workers": 3, "threads": 1}, {"lone_threads": 4}, {"threads": 2}],
    ids=["defaults", "one-worker", "three-workers", "lone-4", "threads-2"],
)
def test_a_worker_given_the_layout_agrees(
    monkeypatch: pytest.MonkeyPatch, cores: int, overrides: dict
) -> None:
    """`python -m service` computes the layout once; a worker reading the environment it
    sets (and the board it creates when there are several workers) finds the same."""
    for name in ("MIMO_WORKERS", "MIMO_THREADS", "MIMO_LONE_THREADS", "MIMO_CORES_BOARD"):
        monkeypatch.delenv(name, raising=False)
    chosen = Layout.of(Settings(**overrides), cores, board=True)
    for name, value in chosen.environ().items():
        monkeypatch.setenv(name, value)
    if chosen.workers > 1:
        monkeypatch.setenv("MIMO_CORES_BOARD", "/run/mimo/cores.board")
    assert Layout.of(Settings(**overrides), cores) == chosen
