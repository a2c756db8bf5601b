"""The KServe manifests (deploy/kserve): every InferenceService validates against KServe's
published CRD schema (vendored in deploy/kserve/schema) and keeps the pod of the plain
Deployment (deploy/k8s/base): image, probes (on the v2 health endpoints), resources, security,
drain, autoscaling. Its ports and the gRPC setting agree, and the Knative-mode variants stay
within what Knative's webhook accepts."""

from __future__ import annotations

import copy
import functools
import gzip
import json
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.conftest import REPO_ROOT

KSERVE = REPO_ROOT / "deploy" / "kserve"
SCHEMA = KSERVE / "schema" / "inferenceservice-v1beta1.json.gz"
K8S = REPO_ROOT / "deploy" / "k8s" / "base"
MODE = "serving.kserve.io/deploymentMode"
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
V2_PATHS = {"/readyz": "/v2/health/ready", "/healthz": "/v2/health/live"}
ISVC_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # KServe's IsvcNameFmt


def _manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(KSERVE.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            yield f"{path.relative_to(KSERVE)}:{doc['metadata']['name']}", doc


MANIFESTS = dict(_manifests())
KNATIVE = {name: doc for name, doc in MANIFESTS.items() if name.startswith("knative/")}
ALL = [pytest.param(doc, id=name) for name, doc in MANIFESTS.items()]
ALL_KNATIVE = [pytest.param(doc, id=name) for name, doc in KNATIVE.items()]


def _deployment() -> dict[str, Any]:
    deployment: dict[str, Any] = yaml.safe_load((K8S / "deployment.yaml").read_text())
    return deployment


def _pod(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The predictor (a pod spec with KServe's fields) and its one container."""
    predictor = doc["spec"]["predictor"]
    (container,) = predictor["containers"]
    return predictor, container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _settings(container: dict[str, Any]) -> Settings:
    """The server's settings from the container's environment, as the server reads them."""
    return Settings.model_validate(
        {
            name.removeprefix("DEEPSERVE_").lower(): value
            for name, value in _env(container).items()
            if name.startswith("DEEPSERVE_")
        }
    )


# The schema as the API server applies it ------------------------------------------------------


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """Kubernetes refuses fields a structural schema does not name (kubectl's strict field
    validation), unless it keeps unknown fields there; JSON Schema allows them unless told."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _closed(sub) for name, sub in out["properties"].items()}
        keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields", False)
        if "additionalProperties" not in out and not keeps_unknown:
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _closed(out[key])
    if "anyOf" in out:
        out["anyOf"] = [_closed(sub) for sub in out["anyOf"]]
    return out


def _unique_list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-map-keys`: no two items share their keys, defaults applied (a port
    without a protocol is TCP)."""
    if not validator.is_type(instance, "array"):
        return
    fields = schema.get("items", {}).get("properties", {})
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(item.get(k, fields.get(k, {}).get("default")) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(
                    f"duplicate entry {dict(zip(keys, key, strict=True))}"
                )
            seen.add(key)


# The CRD leaves metadata to the API server: the parts our manifests use, and KServe's name rule.
_OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 63, "pattern": ISVC_NAME},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

# CRD schemas are OpenAPI 3.0 schema objects, whose keywords mean what they do in draft 4.
_KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-map-keys": _unique_list_map_keys}
)


@functools.cache
def _raw_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    return schema


@functools.cache
def _validator() -> Any:
    schema = _closed(_raw_schema())
    schema["properties"]["metadata"] = _OBJECT_META
    return _KubernetesValidator(schema)


def _errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        ("/".join(map(str, e.absolute_path)), e.message) for e in _validator().iter_errors(doc)
    )


def test_the_vendored_schema_names_its_source() -> None:
    comment = _raw_schema()["$comment"]
    found = re.search(r"kserve/kserve (v[\d.]+) \(commit ([0-9a-f]{40})\)", comment)
    assert found, comment
    assert "Apache License 2.0" in comment
    readme = (SCHEMA.parent / "README.md").read_text()
    assert found[1] in readme and found[2] in readme


@pytest.mark.parametrize("doc", ALL)
def test_each_manifest_matches_kserves_schema(doc: dict[str, Any]) -> None:
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert _errors(doc) == []


def _at(doc: Any, path: tuple[str | int, ...]) -> Any:
    return functools.reduce(operator.getitem, path, doc)


def _rename(*path: str | int, to: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        parent = _at(doc, path[:-1])
        parent[to] = parent.pop(path[-1])

    return change


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        _at(doc, path[:-1])[path[-1]] = value

    return change


def _duplicate_first_port(doc: dict[str, Any]) -> None:
    ports = _pod(doc)[1]["ports"]
    ports.append({k: v for k, v in ports[0].items() if k != "protocol"})  # TCP by default


_C = ("spec", "predictor", "containers", 0)
BROKEN = {
    # Misspelt fields, where the schema names every field, so an unknown one is refused.
    "misspelt predictor field": (
        _rename("spec", "predictor", "minReplicas", to="minReplica"),
        "spec/predictor",
    ),
    "misspelt container field": (
        _rename(*_C, "readinessProbe", to="readinessprobe"),
        "spec/predictor/containers/0",
    ),
    "misspelt probe field": (
        _rename(*_C, "livenessProbe", "httpGet", "path", to="paths"),
        "spec/predictor/containers/0/livenessProbe/httpGet",
    ),
    "misspelt predictor": (_rename("spec", "predictor", to="predictors"), "spec"),
    # Wrong types, values and shapes.
    "replicas as a string": (
        _set("spec", "predictor", "minReplicas", value="2"),
        "spec/predictor/minReplicas",
    ),
    "port as a string": (
        _set(*_C, "ports", 0, "containerPort", value="8000"),
        "spec/predictor/containers/0/ports/0/containerPort",
    ),
    "env value as a number": (
        _set(*_C, "env", 0, "value", value=2),
        "spec/predictor/containers/0/env/0/value",
    ),
    "memory as prose": (
        _set(*_C, "resources", "requests", "memory", value="1 GB"),
        "spec/predictor/containers/0/resources/requests/memory",
    ),
    "probe without a port": (
        _set(*_C, "startupProbe", "httpGet", value={"path": "/v2/health/live"}),
        "spec/predictor/containers/0/startupProbe/httpGet",
    ),
    "the same port twice": (_duplicate_first_port, "spec/predictor/containers/0/ports"),
    "pod annotation as a boolean": (
        _set("spec", "predictor", "annotations", "prometheus.io/scrape", value=True),
        "spec/predictor/annotations/prometheus.io/scrape",
    ),
    "name with capitals": (_set("metadata", "name", value="DeepServe"), "metadata/name"),
}


@pytest.mark.parametrize(("change", "where"), BROKEN.values(), ids=BROKEN.keys())
def test_the_same_validator_refuses_a_broken_manifest(change: Any, where: str) -> None:
    doc = copy.deepcopy(MANIFESTS["inferenceservice.yaml:deepserve"])
    change(doc)
    # At the place that was broken: proof that the schema constrains that part.
    assert where in {path for path, _ in _errors(doc)}, _errors(doc)


# What the manifests must keep from the Deployment -------------------------------------------


@pytest.mark.parametrize("doc", ALL)
def test_one_kserve_container_runs_the_deployments_image_with_models_inside(
    doc: dict[str, Any],
) -> None:
    template = _deployment()["spec"]["template"]
    (original,) = template["spec"]["containers"]
    predictor, container = _pod(doc)
    assert container["name"] == "kserve-container"  # the container KServe serves from
    assert (container["image"], container["imagePullPolicy"]) == (
        original["image"],
        original["imagePullPolicy"],
    )
    assert "model" not in predictor and "storageUri" not in _env(container)  # baked in
    assert _env(container)["PROTOCOL"] == "v2"
    assert predictor["annotations"] == template["metadata"]["annotations"]
    assert doc["metadata"]["annotations"][MODE] in ("Standard", "Knative")


@pytest.mark.parametrize("doc", ALL)
def test_ports_and_the_grpc_setting_agree(doc: dict[str, Any]) -> None:
    predictor, container = _pod(doc)
    settings = _settings(container)
    rest, grpc = settings.port, settings.grpc_port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # KServe and Knative tell the protocol by the port's name: h2c is gRPC (HTTP/2).
    assert set(ports) <= {"http1", "h2c"}
    assert all(p.get("protocol", "TCP") == "TCP" for p in container["ports"])
    assert ports.get("http1", rest) == rest
    assert ports.get("h2c", 0) == grpc  # no h2c port: nothing reaches gRPC, so it is off
    assert int(predictor["annotations"]["prometheus.io/port"]) == rest
    if doc["metadata"]["annotations"][MODE] == "Standard":
        # Both protocols, REST first: KServe makes the first port the Service's port 80.
        assert [p["name"] for p in container["ports"]] == ["http1", "h2c"]
        assert grpc == Settings.model_fields["grpc_port"].default


def test_the_knative_variants_serve_both_protocols_between_them() -> None:
    names = [port["name"] for doc in KNATIVE.values() for port in _pod(doc)[1]["ports"]]
    assert sorted(names) == ["h2c", "http1"]


@pytest.mark.parametrize("doc", ALL)
def test_the_probes_are_the_deployments_on_the_v2_health_endpoints(doc: dict[str, Any]) -> None:
    (original,) = _deployment()["spec"]["template"]["spec"]["containers"]
    _, container = _pod(doc)
    rest = _settings(container).port
    for kind in PROBES:
        expected = copy.deepcopy(original[kind])
        # A port number: Knative accepts a probe on another port only as a number.
        expected["httpGet"] = {"path": V2_PATHS[expected["httpGet"]["path"]], "port": rest}
        assert container[kind] == expected, kind


@pytest.mark.parametrize("doc", ALL)
def test_the_resources_are_the_deployments(doc: dict[str, Any]) -> None:
    (original,) = _deployment()["spec"]["template"]["spec"]["containers"]
    requests, limits = original["resources"]["requests"], original["resources"]["limits"]
    _, container = _pod(doc)
    # Plus a CPU limit where the Deployment has none: KServe's defaults would add one of 1 CPU,
    # below the request, and the pods would be refused.
    cpu_limit = limits.get("cpu", requests["cpu"])
    assert container["resources"] == {"requests": requests, "limits": {"cpu": cpu_limit, **limits}}
    # ONNX Runtime would otherwise start a thread per core of the node.
    assert _settings(container).intra_op_threads == int(cpu_limit)


@pytest.mark.parametrize("doc", ALL)
def test_security_drain_and_settings_are_the_deployments(doc: dict[str, Any]) -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    (original,) = pod["containers"]
    predictor, container = _pod(doc)
    for variable in original["env"]:  # same host, drain, API keys
        assert variable in container["env"], variable["name"]
    if doc["metadata"]["annotations"][MODE] == "Standard":
        assert predictor["securityContext"] == pod["securityContext"]
        assert predictor["terminationGracePeriodSeconds"] == pod["terminationGracePeriodSeconds"]
        assert container["lifecycle"] == original["lifecycle"]
        assert container["securityContext"] == original["securityContext"]
    else:
        # The pod's user, on the container; Knative drains through its queue-proxy.
        user = {k: pod["securityContext"][k] for k in ("runAsNonRoot", "runAsUser")}
        assert container["securityContext"] == {**user, **original["securityContext"]}


@pytest.mark.parametrize("doc", ALL)
def test_autoscaling_is_the_hpas(doc: dict[str, Any]) -> None:
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())["spec"]
    predictor, _ = _pod(doc)
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    if doc["metadata"]["annotations"][MODE] == "Standard":
        assert doc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
        assert predictor["autoScaling"] == {"metrics": hpa["metrics"]}
        # KServe's HPA has Kubernetes' default behaviour, whose scale-down window is this one.
        assert hpa["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


@pytest.mark.parametrize("doc", ALL_KNATIVE)
def test_the_knative_variants_keep_to_what_knative_accepts(doc: dict[str, Any]) -> None:
    assert doc["metadata"]["annotations"][MODE] == "Knative"
    predictor, container = _pod(doc)
    assert len(container["ports"]) == 1  # "more than one container port is set"
    assert "lifecycle" not in container
    # Refused unless Knative's kubernetes.podspec-securitycontext feature is on, or always.
    assert not {"securityContext", "terminationGracePeriodSeconds"} & set(predictor)


# What the manifests ask of the server -------------------------------------------------------


@pytest.mark.parametrize("doc", ALL)
def test_every_deepserve_variable_is_a_setting(doc: dict[str, Any]) -> None:
    _, container = _pod(doc)
    fields = {f"DEEPSERVE_{name.upper()}" for name in Settings.model_fields}
    names = {e["name"] for e in container["env"] if e["name"].startswith("DEEPSERVE_")}
    assert names <= fields, names - fields


def test_the_probe_paths_answer_on_the_real_server(client: TestClient) -> None:
    paths = {_pod(doc)[1][kind]["httpGet"]["path"] for doc in MANIFESTS.values() for kind in PROBES}
    assert paths == {"/v2/health/live", "/v2/health/ready"}
    for path in sorted(paths):
        assert client.get(path).status_code == 200, path
