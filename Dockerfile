# deepserve service image: the FastAPI app, ONNX Runtime and the models; no torch.
#
# The base image is a build argument. By default, NVIDIA's CUDA 12 runtime with cuDNN 9, which
# onnxruntime-gpu needs for the CUDA execution provider; the same image falls back to the CPU
# where no GPU is visible. For a CPU-only host, any Debian-based image with Python 3.11+:
#   docker build -t deepserve .                                              (GPU)
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm -t deepserve .  (CPU)
# Where no registry is reachable, `make container-test` builds a Debian base locally.
ARG BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS base
# CUDA images carry no Python: add the distribution's when the base lacks one.
# hadolint ignore=DL3008
RUN if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c "import sys; assert sys.version_info >= (3, 11), sys.version"

FROM base AS build
# Behind a TLS-intercepting proxy: mount its CA bundle into the build and name it here.
ARG PIP_CERT=""
WORKDIR /src
RUN python3 -m venv /opt/deepserve
COPY pyproject.toml README.md ./
COPY app ./app
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
    && /opt/deepserve/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM base
RUN useradd --system --uid 10001 --no-create-home deepserve \
    && mkdir -p /var/lib/deepserve \
    && chown 10001 /var/lib/deepserve
COPY --from=build /opt/deepserve /opt/deepserve
COPY models /srv/models
ENV PATH=/opt/deepserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEEPSERVE_HOST=0.0.0.0 \
    DEEPSERVE_PORT=8000 \
    DEEPSERVE_GRPC_PORT=8001 \
    DEEPSERVE_MODEL_REPOSITORY=/srv/models \
    DEEPSERVE_STATE_DIR=/var/lib/deepserve
# The embedded fraud history (DEEPSERVE_FRAUD_STORE unset): mount a volume here to keep it.
VOLUME /var/lib/deepserve
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['DEEPSERVE_PORT']}/healthz\", timeout=2)"]
CMD ["python3", "-m", "app"]
