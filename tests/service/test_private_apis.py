"""Other libraries' private names this service relies on, each for a measured gain
(docs/benchmarks.md). pyproject.toml bounds those libraries to the versions checked here; when
an upgrade moves a name, the test of that name fails and says what depends on it."""

from __future__ import annotations

import inspect


def test_uvicorn_httptools_protocol() -> None:
    from uvicorn.protocols.http import httptools_impl

    base = getattr(httptools_impl, "HttpToolsProtocol", None)
    assert base is not None, (
        "service/protocol.py OneWriteProtocol subclasses uvicorn's private "
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol: it moved"
    )
    for name in ("connection_made", "on_response_complete"):
        assert callable(getattr(base, name, None)), (
            f"service/protocol.py overrides HttpToolsProtocol.{name}, which uvicorn renamed: "
            "answers would leave in two writes or not at all"
        )
    assert "self.transport" in inspect.getsource(base.connection_made), (
        "OneWriteProtocol replaces `self.transport` after HttpToolsProtocol.connection_made: "
        "uvicorn no longer writes through that attribute"
    )


def test_uvicorn_multiprocess_takes_sockets() -> None:
    from uvicorn.supervisors import Multiprocess

    assert "sockets" in inspect.signature(Multiprocess).parameters, (
        "service/__main__.py gives uvicorn's Multiprocess one socket per worker "
        "(service/listen.py): its `sockets` argument moved"
    )
