"""Schemathesis against the service's own OpenAPI schema, over a real socket.

Every operation of GET /openapi.json is fuzzed with data that fits its schema (positive) and
data that does not (negative), plus schemathesis' coverage cases (boundaries, missing and
wrong-typed parameters, unexpected methods). Each answer must not be a 5xx, must have a status
code, content type, headers and body that the schema documents, and negative data must be
refused with a 4xx.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from support import ROOT, SERVICE, free_port, service_env, start_service

from service.main import create_app
from service.settings import Settings

MAX_EXAMPLES = 8  # per operation and generation mode, for the fuzzing phase
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "unsupported_method",
]
CONFIG = {
    "seed": 8,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
    "phases": {"stateful": {"enabled": False}},
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
}
HEADER_LENGTH = "inference-header-content-length"
SERVED = {"name": "digits", "version": "1"}
SERVED_NAME = {"name": "digits"}
KEY = "fuzz-key"
AUTH = {"X-API-Key": KEY}
CASES: Counter[str] = Counter()
STATUSES: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz-server") / "server.log"
    env = service_env(
        model_repository,
        port,
        MIMO_GRPC_PORT="0",
        MIMO_MODEL_CONTROL="explicit",  # the load and unload routes are fuzzed too
        MIMO_API_KEY=KEY,
        MIMO_MAX_BODY_BYTES=str(256 * 1024),
        MIMO_MAX_IMAGES_PER_REQUEST="8",
    )
    service = start_service(SERVICE, env, ROOT, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()
        # The server's own log: a 500 would have left a traceback there.
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-4000:]


# The schema is built at collection time from the same code the server runs (schemathesis'
# lazy `from_fixture` loader does not work with pytest 9.2); test_the_served_schema_is_this_one
# checks that GET /openapi.json of the real server is exactly this schema.
OPENAPI = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict(CONFIG))


def aim(case: schemathesis.Case) -> None:
    """Send data that fits the schema to the served model, past the 404 for unknown names,
    so that it reaches the body parser; data that does not fit goes as generated."""
    phase = case.meta.phase if case.meta is not None else None
    if phase is None:
        return
    positive = case.meta.generation.mode == GenerationMode.POSITIVE
    focus = (phase.data.parameter_location, phase.data.parameter)
    coverage = phase.name.value == "coverage"
    path = case.path_parameters or {}
    if coverage and focus[0] != "path":
        # The coverage phase keeps path parameters at one placeholder while it varies the
        # body, headers and query.
        case.path_parameters = {k: SERVED.get(k, v) for k, v in path.items()}
    elif positive and path and zlib.crc32(repr(sorted(path.items())).encode()) % 4:
        # Three in four: a quarter keep the generated names, for the 404s.
        case.path_parameters = {k: SERVED.get(k, v) for k, v in path.items()}
    if positive and case.query and case.query.get("model") is not None:
        case.query = {**case.query, "model": SERVED["name"]}
    if positive and isinstance(case.body, dict) and isinstance(case.body.get("inputs"), list):
        for spec in case.body["inputs"]:
            spec["name"] = "images"
    elsewhere = positive or (coverage and focus[1] != HEADER_LENGTH)
    if case.media_type == "application/json" and case.headers and elsewhere:
        # Any Inference-Header-Content-Length cuts a JSON request short: 400 before parsing.
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != HEADER_LENGTH}


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api(case: schemathesis.Case, server: str) -> None:
    CASES[case.operation.label] += 1
    aim(case)
    try:
        response = case.call_and_validate(base_url=server, headers=AUTH, timeout=15)
    finally:
        if case.operation.path.endswith("/unload") and case.path_parameters == SERVED_NAME:
            # Keep the model served for the operations that follow.
            url = f"{server}/v2/repository/models/{SERVED['name']}/load"
            load = httpx.post(url, headers=AUTH, timeout=30)
            assert load.status_code == 200, load.text
    STATUSES[case.operation.label, response.status_code] += 1


def test_the_served_schema_is_this_one(server: str) -> None:
    assert httpx.get(f"{server}/openapi.json", timeout=10).json() == OPENAPI


def test_every_operation_was_fuzzed() -> None:
    operations = [r.ok().label for r in schema.get_all_operations()]
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len(operations)} operations")
    for label in operations:
        codes = sorted((c, n) for (op, c), n in STATUSES.items() if op == label)
        print(f"  {CASES[label]:5d}  {label}  " + ", ".join(f"{c}: {n}" for c, n in codes))
    assert all(CASES[label] > 0 for label in operations), CASES
