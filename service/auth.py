"""The API key check, one for every protocol (HTTP headers, gRPC metadata)."""

from __future__ import annotations

import secrets

from pydantic import SecretStr

from service.errors import Unauthorized

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def check_api_key(expected: SecretStr | None, authorization: str, api_key: str) -> None:
    """With a key set: `Authorization: Bearer <key>` or `X-API-Key: <key>` must carry it.

    The comparison takes the same time wherever the given key differs from the expected one.
    """
    if expected is None:
        return
    bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    given = bearer or api_key.strip()
    if not given:
        raise Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            _CHALLENGE,
        )
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("wrong API key", _CHALLENGE)
