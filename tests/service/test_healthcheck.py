"""The container's health probe (service/healthcheck.py); it is run against a serving
process in tests/deploy/test_dockerfiles.py and inside a real container in test_containers.py."""

from __future__ import annotations

import pytest
from support import free_port

from service import healthcheck


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("10.1.2.3", "10.1.2.3"),
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
    ],
)
def test_probes_the_address_and_port_the_server_listens_on(
    monkeypatch: pytest.MonkeyPatch, host: str, expected: str
) -> None:
    monkeypatch.setenv("MIMO_HOST", host)
    monkeypatch.setenv("MIMO_PORT", "8123")
    assert healthcheck.url() == f"http://{expected}:8123/v2/health/ready"


def test_fails_saying_why_when_nothing_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("MIMO_HOST", "0.0.0.0")
    monkeypatch.setenv("MIMO_PORT", str(port))
    assert healthcheck.main() == 1
    assert f"not ready: http://127.0.0.1:{port}/v2/health/ready" in capsys.readouterr().err
