"""Deploy files: the Kubernetes config is one the service accepts, and the files agree.

`make lint-deploy` checks each manifest against the Kubernetes schemas; these tests check
what a schema cannot: that the pieces fit each other and the service.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lb_service import config as cfg

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "deploy" / "kubernetes"


def _resources() -> dict[str, dict[str, Any]]:
    documents = [
        document
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def _container() -> dict[str, Any]:
    pod = _resources()["Deployment/lb-service"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def test_configmap_holds_a_config_the_service_accepts(tmp_path: Path) -> None:
    """The ConfigMap's file loads without error and serves on all interfaces from Redis."""
    data = _resources()["ConfigMap/lb-service-config"]["data"]
    path = tmp_path / "lb-service.yaml"
    path.write_text(data["lb-service.yaml"])
    config = cfg.load({}, environ={}, config_path=path)
    service = config.service()
    assert service.listen == "0.0.0.0:50051"
    assert service.store == "redis://lb-service-redis:6379/0"
    assert service.metrics_listen == "0.0.0.0:9464"


def test_deployment_mounts_the_config_it_passes() -> None:
    """The --config path is the ConfigMap's key under the mounted directory."""
    container = _container()
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "config")
    assert config_path.parent == Path(mount["mountPath"])
    assert config_path.name in _resources()["ConfigMap/lb-service-config"]["data"]


def test_ports_and_probes_match_the_config_and_the_image() -> None:
    """Probes and the Service hit the port the config listens on; the uid is the image's."""
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9464}
    assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert container["livenessProbe"]["grpc"]["port"] == ports["grpc"]
    service = _resources()["Service/lb-service"]["spec"]["ports"]
    assert {p["targetPort"] for p in service} == set(ports)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.findall(r"^EXPOSE (.*)$", dockerfile, re.M) == ["50051 9464"]
    (user,) = re.findall(r"^USER (\d+):", dockerfile, re.M)
    pod = _resources()["Deployment/lb-service"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user)


def test_replicas_reach_the_redis_the_config_names() -> None:
    """The store URL is the Redis Service's name and port, and its policy admits the pods."""
    resources = _resources()
    config = yaml.safe_load(resources["ConfigMap/lb-service-config"]["data"]["lb-service.yaml"])
    url = urlsplit(config["store"])
    redis = resources[f"Service/{url.hostname}"]["spec"]
    assert [p["port"] for p in redis["ports"]] == [url.port]
    (rule,) = resources["NetworkPolicy/lb-service-redis"]["spec"]["ingress"]
    (source,) = rule["from"]
    pod_labels = resources["Deployment/lb-service"]["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["port"] for p in rule["ports"]] == [url.port]
