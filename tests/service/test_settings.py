"""service/settings.py: the worker and thread layout chosen for the cores present."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize(
    ("cores", "overrides", "expected"),
    [
        (2, {}, 2),  # two workers of one thread: a lone image gets both cores
        (16, {}, 16),
        (1, {}, 1),  # one worker already has every core: no second session
        (8, {"workers": 1, "threads": 3}, 3),
        (8, {"lone_threads": 4}, 4),
    ],
)
def test_lone_image_threads(
    monkeypatch: pytest.MonkeyPatch, cores: int, overrides: dict, expected: int
) -> None:
    monkeypatch.delenv("MIMO_WORKERS", raising=False)
    monkeypatch.delenv("MIMO_THREADS", raising=False)
    monkeypatch.delenv("MIMO_LONE_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(**overrides).lone_layout() == expected
