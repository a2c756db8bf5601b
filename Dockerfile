# deepserve service image: the FastAPI app, ONNX Runtime and the models; no torch.
# The base image is a build argument, so that the image builds where registries are private
# or unreachable: any Debian-based image with Python 3.11+ will do.
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm -t deepserve .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/deepserve
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/deepserve/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home deepserve
COPY --from=build /opt/deepserve /opt/deepserve
COPY models /srv/models
ENV PATH=/opt/deepserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEEPSERVE_HOST=0.0.0.0 \
    DEEPSERVE_PORT=8000 \
    DEEPSERVE_MODEL_REPOSITORY=/srv/models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python3", "-m", "app"]
