"""docker/kubernetes: core kinds against the Kubernetes schemas (kubernetes-validate ships them
offline), the custom resources (ServiceMonitor, InferenceService) by structure."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import DOCKER, ROOT

from service.settings import Settings

K8S = DOCKER / "kubernetes"
CORE = ("deployment.yaml", "service.yaml", "hpa.yaml")


def load(name: str) -> dict[str, Any]:
    (document,) = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return document


def container(name: str = "deployment.yaml") -> dict[str, Any]:
    document = load(name)
    spec = document["spec"]["template"]["spec"] if "template" in document["spec"] else None
    spec = spec or document["spec"]["predictor"]
    (main,) = spec["containers"]
    return main


def env_of(main: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in main["env"]}


def compose_image() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]["api"]["image"]


def test_every_manifest_is_covered() -> None:
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted(
        [*CORE, "servicemonitor.yaml", "inferenceservice.yaml", "inferenceservice-grpc.yaml"]
    )


@pytest.mark.parametrize("name", CORE)
def test_core_kinds_validate_against_the_kubernetes_schema(name: str) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(load(name), version, strict=True)


def test_the_schema_validation_catches_mistakes() -> None:
    version = kubernetes_validate.latest_version()
    broken = copy.deepcopy(load("deployment.yaml"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpget"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = copy.deepcopy(load("hpa.yaml"))
    broken["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kubernetes_validate_command_line_agrees() -> None:
    tool = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).parent / "kubernetes-validate"
    )
    done = subprocess.run(
        [tool, "--strict", *(str(K8S / n) for n in CORE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(CORE), done.stdout


def test_deployment_probes_resources_security() -> None:
    deployment = load("deployment.yaml")
    pod = deployment["spec"]["template"]
    main = container()
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][kind]), kind
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] >= 1000
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # A read-only root: /tmp (prometheus multiprocess files) is an emptyDir.
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in main["volumeMounts"]} == {"/tmp"}
    env = env_of(main)
    http, grpc = main["ports"]
    assert http["containerPort"] == int(env["MIMO_PORT"]) == 8000 and http["name"] == "http"
    assert grpc["containerPort"] == int(env["MIMO_GRPC_PORT"]) == 8001 and grpc["name"] == "grpc"
    assert env["MIMO_HOST"] == "0.0.0.0"
    # ONNX Runtime would start one thread per core of the node: pin it to the CPU limit.
    assert env["MIMO_THREADS"] == str(main["resources"]["limits"]["cpu"])
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["MIMO_PORT"]
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize(
    "name", ["deployment.yaml", "inferenceservice.yaml", "inferenceservice-grpc.yaml"]
)
def test_environment_names_are_settings(name: str) -> None:
    fields = {f"MIMO_{field.upper()}" for field in Settings.model_fields}
    names = {n for n in env_of(container(name)) if n.startswith("MIMO_")}
    assert names and names <= fields, names - fields


def test_service_and_autoscaler_target_the_deployment() -> None:
    deployment, service, hpa = (load(n) for n in CORE)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert [p["targetPort"] for p in ports.values()] == [p["name"] for p in container()["ports"]]
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it


def test_service_monitor_selects_the_service() -> None:
    monitor, service = load("servicemonitor.yaml"), load("service.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    )
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # job label = the Prometheus job the alert rules match (job="mimo-serve")
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    shipped = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert job == shipped["scrape_configs"][0]["job_name"]


def validate_as_pod_container(main: dict[str, Any]) -> None:
    """An InferenceService's container is a core Container: validated inside a throwaway Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [main]},
    }
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_inference_service_runs_the_image_over_the_open_inference_protocol() -> None:
    isvc = load("inferenceservice.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    main = container("inferenceservice.yaml")
    assert main["name"] == "kserve-container"
    env = env_of(main)
    assert env["PROTOCOL"] == "v2"
    (port,) = main["ports"]
    assert port["containerPort"] == int(env["MIMO_PORT"]) == 8000
    assert env["MIMO_HOST"] == "0.0.0.0"
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert main["securityContext"]["runAsNonRoot"] is True
    validate_as_pod_container(main)


def test_grpc_inference_service_names_its_port_h2c() -> None:
    """Knative routes one port per container, and gRPC only when that port is named h2c."""
    isvc = load("inferenceservice-grpc.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    main = container("inferenceservice-grpc.yaml")
    env = env_of(main)
    (port,) = main["ports"]
    assert port["name"] == "h2c"
    assert port["containerPort"] == int(env["MIMO_GRPC_PORT"]) == 8001
    assert env["MIMO_HOST"] == "0.0.0.0"
    assert main["securityContext"]["runAsNonRoot"] is True
    validate_as_pod_container(main)


@pytest.mark.parametrize(
    "name", ["deployment.yaml", "inferenceservice.yaml", "inferenceservice-grpc.yaml"]
)
def test_images_match_the_compose_image(name: str) -> None:
    assert container(name)["image"] == compose_image()
    assert container(name)["imagePullPolicy"] == "IfNotPresent"


def test_manifests_are_plain_yaml_documents() -> None:
    for path in K8S.glob("*.yaml"):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(documents) == 1, path
        assert json.loads(json.dumps(documents[0]))["metadata"]["name"].startswith("mimo-serve")
