"""The container's health probe: `python -m service.healthcheck` exits 0 when the service of
this container answers its readiness path, 1 (saying why on stderr) when it does not.

The Dockerfiles' HEALTHCHECK and docker-compose.yml run it. A module and not a `python -c`
one-liner because podman's Docker-compatible API splits a healthcheck's arguments at spaces
(the one-liner became `python -c import`, a syntax error, so the container never got healthy);
no argument here has a space. It reads the port and host from the same settings as the server.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"  # the Open Inference Protocol's readiness path
TIMEOUT_S = 4.0  # under the HEALTHCHECK's --timeout (5 s)
ANY_ADDRESS = {"0.0.0.0", "::", ""}


def url() -> str:
    from service.settings import Settings

    settings = Settings()
    host = "127.0.0.1" if settings.host in ANY_ADDRESS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{READY_PATH}"


def main() -> int:
    target = url()
    try:
        with urllib.request.urlopen(target, timeout=TIMEOUT_S) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:  # 503 while loading or draining
        print(f"not ready: {target} answered {error.code}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"not ready: {target}: {error}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
