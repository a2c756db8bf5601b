#!/usr/bin/env bash
# `make container-test`: build the service image with podman, run it, smoke-test it.
#
# Works without any registry: when BASE_IMAGE is not given, a Debian bookworm base with
# Python 3.11 is built locally with mmdebstrap (from the Debian mirror) and imported.
# Steps: base image -> `podman build` -> `podman run` -> ready, one image, one transaction,
# the Open Inference Protocol over REST and gRPC, non-root, no torch, health check -> clean up.
#   deploy/container-test.sh            (BASE_IMAGE, IMAGE, PORT, GRPC_PORT may be set)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-localhost/deepserve-base:bookworm}
IMAGE=${IMAGE:-localhost/deepserve:test}
PORT=${PORT:-18000}
GRPC_PORT=${GRPC_PORT:-18001}
NAME=deepserve-container-test
# Sandboxed hosts (no systemd, no user namespaces) need runc and explicit limits.
RUN_FLAGS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    echo "needs: ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    exit 1
  fi
}

need podman runc curl
if ! podman image exists "$BASE_IMAGE"; then
  [ "$BASE_IMAGE" = localhost/deepserve-base:bookworm ] || {
    echo "base image $BASE_IMAGE not found locally; pull it first" >&2
    exit 1
  }
  need mmdebstrap
  echo "building $BASE_IMAGE with mmdebstrap (Debian bookworm, python3, python3-venv)"
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
    bookworm - | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
fi

# Docker format: the OCI image format has no HEALTHCHECK.
BUILD_FLAGS=(--format docker --network host --build-arg "BASE_IMAGE=$BASE_IMAGE")
# A host that reaches PyPI through a TLS-intercepting proxy trusts it with its CA bundle:
# lend that bundle to the build.
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [ -n "$HOST_CA" ] && [ -f "$HOST_CA" ]; then
  BUILD_FLAGS+=(--volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
echo "building $IMAGE from $BASE_IMAGE"
podman build "${RUN_FLAGS[@]}" "${BUILD_FLAGS[@]}" -t "$IMAGE" .

cleanup() { podman rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
# Host networking: sandboxes without a container network stack still run it.
podman run -d --name "$NAME" "${RUN_FLAGS[@]}" --network host -e "DEEPSERVE_PORT=$PORT" \
  -e "DEEPSERVE_GRPC_PORT=$GRPC_PORT" "$IMAGE" >/dev/null
BASE="http://127.0.0.1:$PORT"

echo "waiting for $BASE/readyz"
for _ in $(seq 1 120); do
  curl -sf "$BASE/readyz" >/dev/null && break
  if [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" != true ]; then
    podman logs "$NAME" >&2
    echo "FAIL: container exited" >&2
    exit 1
  fi
  sleep 0.5
done

fail() { echo "FAIL: $*" >&2; podman logs --tail 30 "$NAME" >&2; exit 1; }
check() {  # description, command producing output, expected substring
  local output
  output=$(eval "$2") || fail "$1: command failed"
  [[ "$output" == *"$3"* ]] || fail "$1: expected '$3' in: $output"
  echo "ok: $1"
}

check "ready" "curl -sf $BASE/readyz" '"status":"ready"'
check "classifies one image" \
  "curl -sf -H 'Content-Type: image/jpeg' --data-binary @tests/data/cat.jpg $BASE/v1/classify" \
  '"label":"cat"'
check "scores one transaction" \
  "curl -sf -H 'Content-Type: application/json' -d @tests/data/transaction.json $BASE/v1/fraud/score" \
  '"decision"'
check "bad input is a 4xx JSON error" \
  "curl -s -o - -w ' %{http_code}' -H 'Content-Type: image/jpeg' --data-binary 'not a jpeg' $BASE/v1/classify" \
  ' 400'
check "v2 REST infers" \
  "curl -sf -d '{\"inputs\": [{\"name\": \"features\", \"shape\": [1, 15], \"datatype\": \"FP32\", \"data\": [57.23, 0, 1, 4, 112.4, 17, 115.4, 79, 94.3, 0, 0, 11, 0, 44, 0]}]}' $BASE/v2/models/fraud/infer" \
  '"name":"fraud_probability"'
check "v2 gRPC answers ServerReady" \
  "podman exec $NAME python3 -c 'import grpc; from app.api.open_inference.stubs import grpc_service_pb2 as pb; ready = grpc.insecure_channel(\"127.0.0.1:$GRPC_PORT\").unary_unary(\"/inference.GRPCInferenceService/ServerReady\", request_serializer=pb.ServerReadyRequest.SerializeToString, response_deserializer=pb.ServerReadyResponse.FromString); print(ready(pb.ServerReadyRequest(), timeout=5).ready)'" \
  "True"
check "runs as a non-root user" "podman exec $NAME id -u" "10001"
check "ships no torch" \
  "podman exec $NAME python3 -c 'import importlib.util as u; print(u.find_spec(\"torch\") is None)'" \
  "True"
check "health check passes" "podman healthcheck run $NAME && echo healthy" "healthy"
echo "image size: $(podman image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
echo "container test passed"
