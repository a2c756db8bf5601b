"""Deployment files: the Dockerfile lints clean, compose matches its schema, and the
Kubernetes manifests (base and GPU overlay) validate against the Kubernetes API schemas."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert tool, f"{name} is not installed (it is in the dev extra)"
    return subprocess.run([tool, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_dockerfile_lints_clean() -> None:
    result = run_tool("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_schema() -> None:
    result = run_tool(
        "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    gpu = compose["services"]["deepserve"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu[0]["capabilities"] == ["gpu"]
    assert compose["services"]["deepserve-cpu"]["profiles"] == ["cpu"]
    assert "prometheus" in compose["services"]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these files: maps recursively, lists of named
    items by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in base + patch)
    ):
        by_name = {item["name"]: item for item in base}
        for item in patch:
            by_name[item["name"]] = _merge(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return copy.deepcopy(patch)


def rendered(tmp_path: Path, overlay: str | None) -> list[Path]:
    """The resources of the base, or of an overlay, each written to its own file."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    resources = {
        f"{n}-{name}": resource
        for name in kustomization["resources"]
        for n, resource in enumerate(yaml.safe_load_all((K8S / "base" / name).read_text()))
    }
    if overlay:
        spec = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert spec["resources"] == ["../../base"]
        for patch in spec["patches"]:
            body = yaml.safe_load((K8S / "overlays" / overlay / patch["path"]).read_text())
            for name, resource in resources.items():
                if (resource["kind"], resource["metadata"]["name"]) == (
                    body["kind"],
                    body["metadata"]["name"],
                ):
                    resources[name] = _merge(resource, body)
    paths = []
    for name, resource in resources.items():
        path = tmp_path / f"{overlay or 'base'}-{name}"
        path.write_text(yaml.safe_dump(resource))
        paths.append(path)
    return paths


@pytest.mark.parametrize("overlay", [None, "gpu"])
def test_kubernetes_manifests_validate_strictly(tmp_path: Path, overlay: str | None) -> None:
    paths = rendered(tmp_path, overlay)
    result = run_tool("kubernetes-validate", "--strict", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "did not validate" not in result.stdout + result.stderr


def test_the_deployment_probes_drains_and_asks_for_a_gpu_in_the_overlay(tmp_path: Path) -> None:
    deployment = next(
        yaml.safe_load(p.read_text()) for p in rendered(tmp_path, "gpu") if "deployment" in p.name
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DEEPSERVE_DEVICE"] == "cuda"
    drain = float(env["DEEPSERVE_SHUTDOWN_GRACE_S"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain + pause


def test_replicas_share_the_fraud_history_in_a_redis_with_a_volume(tmp_path: Path) -> None:
    resources = [yaml.safe_load(p.read_text()) for p in rendered(tmp_path, None)]
    by_name = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    (container,) = by_name["Deployment", "deepserve"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    redis = by_name["StatefulSet", "deepserve-redis"]
    service = by_name["Service", redis["spec"]["serviceName"]]
    assert env["DEEPSERVE_FRAUD_STORE"] == f"redis://{redis['spec']['serviceName']}:6379/0"
    (redis_container,) = redis["spec"]["template"]["spec"]["containers"]
    assert "--appendonly" in redis_container["args"]
    mounts = {m["name"]: m["mountPath"] for m in redis_container["volumeMounts"]}
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in mounts
    assert service["spec"]["ports"][0]["port"] == 6379

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for replica in ("replica-a", "replica-b"):
        assert services[replica]["environment"]["DEEPSERVE_FRAUD_STORE"] == "redis://redis:6379/0"
        assert services[replica]["profiles"] == ["replicated"]
    assert "--appendonly" in services["redis"]["command"]
    assert "fraud-history:/var/lib/deepserve" in services["deepserve-cpu"]["volumes"]
