# deepserve: `make run` serves models/, `make test` runs the tests. Both install what they need
# into a virtual environment (.venv), once per change of pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# Debian packages (wrk for the benchmark) are installed as root, or through sudo.
APT_INSTALL := $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q
DATASETS ?= ../shared/datasets

DIAGRAM := docs/architecture.png

.PHONY: run test bench profile gpu lint screenshots diagram grpc-stubs load-history replay investigate train-cifar10 train-cat-vs-dog train-fraud evaluate-fraud soak container-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The service alone: no torch, no training dependencies.
$(VENV)/.serve-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

# Tests and training. torch is pinned to the CPU build and installed first, so that
# nothing else can pull in a different (several-GB CUDA) build.
$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[train,dev]"
	touch $@ $(VENV)/.serve-installed

run: $(VENV)/.serve-installed
	$(PY) -m app

# Real servers the tests start: Redis (the shared fraud history) and nginx (two replicas
# behind it), and a real browser for the console (Debian's chromium); without them those
# tests skip and say why.
test: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk || echo "no wrk: the benchmark test skips"
	@command -v redis-server >/dev/null || $(APT_INSTALL) redis-server || echo "no redis-server: the Redis tests skip"
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || $(APT_INSTALL) nginx-light || echo "no nginx: the scale-out test skips"
	@command -v chromium >/dev/null || $(APT_INSTALL) chromium || echo "no chromium: the console tests skip"
	$(PY) -m ruff check app training tests bench
	$(PY) -m mypy app
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The service beside in-process ONNX Runtime, a FastAPI no-op, Ray Serve and BentoML
# (each peer in its own venv under bench/.venvs), and its v2 (Open Inference Protocol) beside
# /v1, driven by wrk and Triton's perf_analyzer (in a venv there too; it links libb64-0d):
# bench/results/<date>-<host>.{json,md,png}. The v2 rows alone, in minutes:
# $(PY) -m bench --only open-inference
bench: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk
	@dpkg -s libb64-0d >/dev/null 2>&1 || $(APT_INSTALL) libb64-0d || echo "no libb64-0d: no perf_analyzer rows"
	$(PY) -m bench

# Where a served request's time goes: py-spy on the server under wrk at c=64, by thread and
# stage (bench/results/profile-*.md and .png; about a minute).
profile: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk
	$(PY) -m bench.profile

# The GPU path in one go (bench/gpu.py): ONNX Runtime with CUDA, training on CUDA, in-process
# images/s for each provider setting, serving; on a CPU it measures what it can and says what
# it skipped. WHEEL_PARTS: a folder of onnxruntime-gpu's parts, where it is not installed.
gpu: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk
	$(PY) -m bench.gpu bench/results/gpu $(if $(WHEEL_PARTS),--wheel-parts $(WHEEL_PARTS))

# The console's screenshots in docs/, taken by its browser tests.
screenshots: $(VENV)/.dev-installed
	DEEPSERVE_SCREENSHOTS=docs $(PY) -m pytest -q tests/console

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check app training tests bench
	$(PY) -m ruff format --check app training tests bench
	$(PY) -m mypy app
	$(VENV)/bin/lint-imports

# The commands that made the committed models (see each model.json's provenance).
train-cifar10: $(VENV)/.dev-installed
	$(PY) -m training images --data $(DATASETS)/cifar10-jpeg.tar.gz --name cifar10

# Cat vs dog from 500 images per class four ways (EfficientNet-Lite0's ImageNet features
# frozen, fine-tuned, from scratch; a CNN pretrained on the 8 other classes), publish the
# best on a validation split as models/cat-vs-dog.
train-cat-vs-dog: $(VENV)/.dev-installed
	$(PY) -m training transfer-experiment --data $(DATASETS)/cifar10-jpeg.tar.gz

train-fraud: $(VENV)/.dev-installed
	$(PY) -m training fraud --data $(DATASETS)/fraud-transactions.csv.gz --name fraud

# The fraud benchmark's protocol: our MLP and baselines on its four folds, beside the
# published results (writes runs/fraud-evaluation-*/results.md and metrics.png).
evaluate-fraud: $(VENV)/.dev-installed
	$(PY) -m training evaluate --data $(DATASETS)/fraud-transactions.csv.gz

# Ten minutes of mixed load on models/: fails if the server's RSS grows 5% or more after
# warm-up, or any request goes unanswered (writes bench/results/soak-*.json and .png).
soak: $(VENV)/.dev-installed
	$(PY) -m tests.soak --minutes 10

# Build the image with podman (a Debian base built locally when no registry is reachable),
# run it, and smoke-test the container. Needs podman, runc and mmdebstrap (installed with
# apt-get when run as root).
container-test:
	deploy/container-test.sh

# The dataset's transactions from 2018-06-01 to 2018-08-14 replayed through HTTP into an
# empty history, checked against training/'s offline features and evaluation, with the
# throughput: bench/results/replay-<date>.{json,md}.
replay: $(VENV)/.dev-installed
	$(PY) -m bench.replay

# A simulated investigation team works the alert queue over the four folds' test weeks
# (the 28 days from 2018-08-08 to 2018-09-04), through HTTP: bench/results/investigation-<date>.{json,md,png}.
investigate: $(VENV)/.dev-installed
	$(PY) -m bench.investigation

# Start the fraud history with the dataset's last 37 days (the server must be stopped).
load-history: $(VENV)/.serve-installed
	$(PY) -m app.fraud.history.bulk_load --csv $(DATASETS)/fraud-transactions.csv.gz

# The architecture picture in the README, from its Graphviz source.
diagram: $(DIAGRAM)

$(DIAGRAM): docs/architecture.dot
	@command -v dot >/dev/null || $(APT_INSTALL) graphviz
	dot -Tpng -Gdpi=110 $< -o $@

# The Open Inference Protocol's gRPC stubs, from the .proto files beside them (Triton's, which
# KServe's predict_v2.proto is a subset of). Committed; rerun after changing a .proto file.
STUBS := app/api/open_inference/stubs
grpc-stubs: $(VENV)/.dev-installed
	$(PY) -m grpc_tools.protoc -I $(STUBS) --python_out=$(STUBS) --pyi_out=$(STUBS) \
		--grpc_python_out=$(STUBS) $(STUBS)/grpc_service.proto $(STUBS)/model_config.proto
	sed -i -E 's/^import (grpc_service|model_config)_pb2/from . import \1_pb2/' $(STUBS)/*.py $(STUBS)/*.pyi
	rm $(STUBS)/model_config_pb2_grpc.py  # no services in that file

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
