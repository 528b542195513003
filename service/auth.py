"""The API key check, one for every protocol (HTTP headers, gRPC metadata)."""

from __future__ import annotations

import hashlib
import secrets

from pydantic import SecretStr

from service.errors import Unauthorized

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def check_api_key(expected: SecretStr | None, authorization: str, api_key: str) -> None:
    """With a key set: `Authorization: Bearer <key>` or `X-API-Key: <key>` must carry it.

    Both keys are hashed first, so that the comparison takes the same time whatever the given
    key is, its length included.
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
    digest = hashlib.sha256(given.encode()).digest()
    if not secrets.compare_digest(
        digest, hashlib.sha256(expected.get_secret_value().encode()).digest()
    ):
        raise Unauthorized("wrong API key", _CHALLENGE)
