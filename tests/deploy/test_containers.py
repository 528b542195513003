"""`docker compose up`, for real: the images built from the unchanged Dockerfile, the stack of
the shipped docker-compose.yml (api + Prometheus) running in podman, checked from outside as a
user and an operator would: predictions, metrics, the user and the read-only models, the
healthcheck, Prometheus scraping the api by its service name with every rule loaded, the
uncertainty alert firing on shifted traffic and quiet on clean traffic, every Grafana panel's
query answered, a stop under load answering what is in flight, a restart after a crash.

compose_stack.py says what the test changes (ports, one more model, a shorter `for:` on one
alert) and how base images are provided where no registry answers. Skipped, saying why, where
no container engine can run; failed instead under .ci/run (REQUIRE_CONTAINERS).

The tests run in file order on one stack: the dashboard's queries read the traffic of the alert
test, which needs the digits model untouched before it; the stop and the restart come last.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml
from compose_stack import (
    COMPOSE_FILE,
    NO_CONTAINERS,
    PROJECT,
    SERVICES,
    UNCERTAIN_HIGH,
    Ports,
    Stack,
    api_image,
    clean_environment,
    duration_s,
    models_with,
    override,
    podman,
    provide_base_images,
    report,
    shortened_rules,
    timed,
)
from deploy_support import (
    GRAFANA_VARIABLES,
    PROMETHEUS_DIR,
    ROOT,
    dashboard_queries,
    png,
    prometheus_query,
    rule_groups,
)
from drain_support import Traffic, stop_under_load
from support import containers_unavailable, free_port, wait_for

from service.settings import Settings

EXAMPLE = ROOT / "service" / "static" / "examples" / "clear.png"  # a handwritten 7, 28x28
UID = 10001  # docker/Dockerfile's USER


@pytest.fixture(scope="module")
def stack(deploy_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if why := podman.unusable(network_dns=True):
        containers_unavailable(f"{NO_CONTAINERS}: {why}")
    folder = tmp_path_factory.mktemp("compose")
    try:
        bases = provide_base_images(folder)
    except (podman.PodmanError, subprocess.SubprocessError, OSError) as exc:
        containers_unavailable(f"{NO_CONTAINERS}: no base image ({exc})")
    ports = Ports(free_port(), free_port(), free_port())
    models = models_with(folder / "models", deploy_repository)
    rules = shortened_rules(folder / "prometheus")
    (folder / "test.yml").write_text(override(ports, models, rules))
    with podman.api_socket(folder) as docker_host:
        env = {**clean_environment(), "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "0"}
        env["CONTAINERS_CONF"] = podman.environment()["CONTAINERS_CONF"]
        stack = Stack(PROJECT, (COMPOSE_FILE, folder / "test.yml"), env, ports)
        stack.remove()  # what a killed run left
        try:
            _, build_s = timed(lambda: stack.compose("build", "api"))
            _, up_s = timed(lambda: stack.compose("up", "--detach", "--no-build", *SERVICES))
            _, ready_s = timed(
                lambda: wait_for(
                    "the api ready through its published port",
                    lambda: httpx.get(f"{stack.api}/v2/health/ready").status_code == 200,
                    120,
                )
            )
            size = stack.podman("image", "inspect", "--format", "{{.Size}}", api_image())
            for line in bases:
                report(line)
            report(
                f"api image built in {build_s:.0f} s ({int(size.stdout) / 1e6:.0f} MB); "
                f"`up` {up_s:.1f} s, ready {ready_s:.1f} s later"
            )
            yield stack
        except BaseException:
            print(stack.logs())
            raise
        finally:
            stack.remove()


def test_api_answers_predict_raw_and_multipart_and_grpc(stack: Stack) -> None:
    image = EXAMPLE.read_bytes()
    raw = httpx.post(f"{stack.api}/predict", content=image, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["model"] == "mnist"  # the compose file's default model
    (answer,) = raw.json()["predictions"]
    assert (answer["label"], answer["uncertain"]) == ("7", False)
    form = httpx.post(f"{stack.api}/predict", files={"file": ("seven.png", image, "image/png")})
    assert form.status_code == 200, form.text
    (same,) = form.json()["predictions"]
    assert same["probability"] == answer["probability"] and same["filename"] == "seven.png"
    refused = httpx.post(
        f"{stack.api}/predict", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert refused.status_code == 415 and "send one image" in refused.json()["error"]
    grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{stack.ports.grpc}")
    assert grpc.is_server_ready() and grpc.is_model_ready("digits")


def test_metrics_are_exposed(stack: Stack) -> None:
    text = httpx.get(f"{stack.api}/metrics").text
    assert 'mimo_model_info{ensemble_size="3",model="mnist",provider="cpu",version="1"} 1.0' in text
    assert 'mimo_model_info{ensemble_size="1",model="mnist",provider="cpu",version="2"} 1.0' in text
    assert 'mimo_uncertain_predictions_total{model="digits",version="1"}' in text


def test_runs_as_its_user_with_the_models_read_only(stack: Stack) -> None:
    api = stack.container("api")
    assert stack.podman("exec", api, "id", "-u").stdout.strip() == str(UID)
    write = stack.podman("exec", api, "touch", "/app/models/mnist/1/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    (mount,) = [m for m in stack.inspect("api")["Mounts"] if m["Destination"] == "/app/models"]
    assert mount["RW"] is False


def test_the_healthcheck_passes(stack: Stack) -> None:
    """Run by hand: podman runs healthchecks by itself only through systemd timers."""
    check = stack.podman("healthcheck", "run", stack.container("api"), check=False)
    assert check.returncode == 0, (check.stdout, check.stderr, stack.inspect("api")["State"])


def test_prometheus_scrapes_the_api_by_its_service_name_and_loads_every_rule(stack: Stack) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    up = wait_for(
        "the api scraped",
        lambda: [r for r in prometheus_query(stack.prometheus, "up") if r["value"][1] == "1"],
        60,
    )
    (target,) = up
    api_address = stack.inspect("api")["NetworkSettings"]["Networks"]
    (network,) = api_address.values()
    port = job["dns_sd_configs"][0]["port"]
    # found through the DNS name of docker-compose.yml's alias, not a static address
    assert target["metric"] == {
        "__name__": "up",
        "instance": f"{network['IPAddress']}:{port}",
        "job": job["job_name"],
    }
    shipped = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    expected = {g["name"]: [r.get("alert") or r["record"] for r in g["rules"]] for g in shipped}
    groups = rule_groups(stack.prometheus)
    assert {g["name"]: [r["name"] for r in g["rules"]] for g in groups} == expected
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups


def digits_model_alerts(stack: Stack) -> dict[str, str]:
    """Alert name -> state (pending, firing) of the alerts about the digits model."""
    body = httpx.get(f"{stack.prometheus}/api/v1/alerts", timeout=10).json()
    return {
        a["labels"]["alertname"]: a["state"]
        for a in body["data"]["alerts"]
        if a["labels"].get("model") == "digits"
    }


def replay(stack: Stack, images: list[bytes]) -> list[dict[str, Any]]:
    answers = []
    with httpx.Client(base_url=stack.api, timeout=30) as client:
        for image in images:
            answer = client.post(
                "/predict?model=digits", content=image, headers={"Content-Type": "image/png"}
            )
            assert answer.status_code == 200, answer.text
            answers.extend(answer.json()["predictions"])
    return answers


def value(stack: Stack, expr: str) -> float:
    (sample,) = prometheus_query(stack.prometheus, expr)
    return float(sample["value"][1])


def landed(stack: Stack, total: int) -> None:
    """Wait until Prometheus has scraped `total` digits predictions, then for two rule
    evaluations, so that the rules have seen them."""
    wait_for(
        f"{total} predictions scraped",
        lambda: value(stack, 'sum(mimo_predictions_total{model="digits"})') == total,
        60,
    )
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    time.sleep(2 * duration_s(config["global"]["evaluation_interval"]) + 1)


def test_shifted_traffic_fires_the_uncertainty_alert_and_clean_traffic_does_not(
    stack: Stack,
) -> None:
    """Clean digits (the held-out test split) leave the uncertain share near its 5 % design
    point; noise and corrupted digits push it over 15 % and MimoServeUncertainShareHigh fires.
    Its `for:` is 5 s here, not 15 min (compose_stack.UNCERTAIN_HIGH). MimoServeUncertainShareRising
    and MimoServeMutualInformationRising compare with one day earlier: they cannot fire in a
    fresh Prometheus and are not asserted."""
    from training.corruptions import gaussian_noise, impulse_noise
    from training.data import load_dataset

    test = load_dataset("digits", "test")
    clean = [png(image[0]) for image in test.images]
    # the series exist at 0 before the first request (metrics.start_series): rate() sees it all
    wait_for(
        "the first scrape",
        lambda: value(stack, 'sum(mimo_predictions_total{model="digits"})') == 0,
        60,
    )
    answers = replay(stack, clean)
    clean_share = np.mean([a["uncertain"] for a in answers])
    landed(stack, len(answers))
    rate = value(stack, 'mimo:predictions:rate30m{model="digits"}')
    share = value(stack, 'mimo:uncertain_share:ratio_rate30m{model="digits"}')
    report(f"clean: {len(answers)} digits, {clean_share:.1%} flagged; Prometheus: {share:.1%}")
    assert rate > 0.05  # the alert's traffic floor is met: only the share keeps it quiet
    assert share == pytest.approx(clean_share, abs=0.02) and share < 0.15
    # not pending or firing at any evaluation since the traffic began, not only now
    ever = f'max_over_time(ALERTS{{alertname="{UNCERTAIN_HIGH}", model="digits"}}[10m])'
    assert prometheus_query(stack.prometheus, ever) == []

    rng = np.random.default_rng(0)
    pixels = test.images.astype(np.float32) / 255.0
    shifted = [png(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(120)]
    for corrupt in (gaussian_noise, impulse_noise):
        corrupted = corrupt(pixels[:120], 5, 0)
        shifted += [png(np.round(x[0] * 255).astype(np.uint8)) for x in corrupted]
    flagged = np.mean([a["uncertain"] for a in replay(stack, shifted)])
    sent = time.monotonic()
    wait_for(
        "MimoServeUncertainShareHigh firing",
        lambda: digits_model_alerts(stack).get(UNCERTAIN_HIGH) == "firing",
        90,
    )
    share = value(stack, 'mimo:uncertain_share:ratio_rate30m{model="digits"}')
    report(
        f"shifted: {len(shifted)} noise and corrupted digits, {flagged:.1%} flagged; share "
        f"{share:.1%}: {UNCERTAIN_HIGH} firing {time.monotonic() - sent:.0f} s after the replay"
    )


def test_every_dashboard_panel_query_returns_series(stack: Stack) -> None:
    """Grafana cannot run here: its dashboard's queries go to the stack's Prometheus instead,
    after the traffic above, and each must return data (a panel showing "No data" is a bug)."""
    empty = []
    for title, expr in dashboard_queries():
        for variable, replacement in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, replacement)
        if not prometheus_query(stack.prometheus, expr):
            empty.append((title, expr))
    assert empty == []


def test_the_api_restarts_by_its_restart_policy_after_its_process_is_killed(stack: Stack) -> None:
    before = stack.inspect("api")
    os.kill(before["State"]["Pid"], signal.SIGKILL)  # as the kernel's OOM killer would
    wait_for(
        "the api restarted",
        lambda: stack.inspect("api")["RestartCount"] > before["RestartCount"],
        60,
    )
    wait_for(
        "the restarted api serving",
        lambda: (
            httpx.post(
                f"{stack.api}/predict",
                content=EXAMPLE.read_bytes(),
                headers={"Content-Type": "image/png"},
            ).status_code
            == 200
        ),
        120,
    )


def test_compose_stop_under_load_answers_every_request_in_flight(stack: Stack) -> None:
    """`docker compose stop api` while 16 clients send: readiness fails first (the shutdown
    delay), every request sent is answered, and the container exits by itself well within
    the compose file's stop_grace_period (not killed at its end)."""
    # the image's defaults: compose sets no MIMO_SHUTDOWN_* (this process's environment may)
    delay_s = Settings.model_fields["shutdown_delay_s"].default
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grace_s = duration_s(compose["services"]["api"]["stop_grace_period"])
    traffic = Traffic()
    clean = [EXAMPLE.read_bytes()]
    asyncio.run(
        stop_under_load(
            stack.api,
            clean,
            lambda: stack.compose("stop", "api", timeout=grace_s + 30),
            traffic,
            unready_within_s=delay_s + 2,
            answered_within_s=grace_s,
        )
    )
    state = stack.inspect("api")["State"]
    report(
        f"stop under load: {traffic.sent} requests, answers {traffic.answers}, "
        f"{traffic.in_flight_at_stop} in flight at the stop, unready after "
        f"{traffic.unready_after_s:.2f} s, stopped after {traffic.stopped_after_s:.1f} s"
    )
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.answers == {200: traffic.sent}
    assert traffic.in_flight_at_stop > 0
    assert traffic.unready_after_s is not None and traffic.unready_after_s < delay_s
    # 0, or 143 (SIGTERM) under an init process; not 137: killed at the end of the grace period
    assert state["Status"] == "exited" and state["ExitCode"] in (0, 143), state
    assert traffic.stopped_after_s is not None and traffic.stopped_after_s < grace_s
