"""service/settings.py: the knobs and their checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_grpc_and_http_ports_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIMO_GRPC_PORT", raising=False)
    with pytest.raises(ValidationError, match="MIMO_GRPC_PORT=0"):
        Settings(port=9000, grpc_port=9000)
    assert Settings(port=9000, grpc_port=0).grpc_port == 0
