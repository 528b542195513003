"""The container's health probe: `python -m service.healthcheck` exits 0 when the service of
this container answers its readiness path, 1 (saying why on stderr) when it does not.

The Dockerfiles' HEALTHCHECK and docker-compose.yml run it. A module and not a `python -c`
one-liner because podman's Docker-compatible API splits a healthcheck's arguments at spaces
(the one-liner became `python -c import`, a syntax error, so the container never got healthy);
no argument here has a space. It reads the port and host from the same settings as the server.
"""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"  # the Open Inference Protocol's readiness path
TIMEOUT_S = 4.0  # under the HEALTHCHECK's --timeout (5 s)
# A server listening on every address answers on loopback (IPv6's also where it is v6-only).
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}


def url() -> str:
    from service.settings import Settings

    settings = Settings()
    host = LOOPBACK.get(settings.host, settings.host).strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{READY_PATH}"


def main() -> int:
    try:
        target = url()
    except ValueError as error:  # pydantic's ValidationError: a setting the server refuses too
        print(f"not ready: the settings are invalid: {error}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(target, timeout=TIMEOUT_S) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:  # 503 while loading or draining
        print(f"not ready: {target} answered {error.code}", file=sys.stderr)
        return 1
    except (OSError, http.client.HTTPException) as error:
        print(f"not ready: {target}: {error!r}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
