"""All configuration, from `DEEPSERVE_*` environment variables (or a `.env` file).

Invalid values fail at start-up with a message naming the variable.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.serving import config as serving

# Each role may do what the ones before it may: a client scores and records, an analyst also
# labels, looks cards and terminals up and works alerts, an admin also loads models.
Role = Literal["client", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("client", "analyst", "admin")
_KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class ApiKey:
    """An API key as the service keeps it: its digest, never the key itself; its role, and
    the name that stands for it wherever the service must say who acted."""

    digest: bytes  # sha256 of the key: equal-length inputs for a constant-time compare
    role: Role
    name: str

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def parse_api_key(entry: str) -> ApiKey:
    """`key`, `key:role` or `key:role:name`; the role `client` unless given."""
    secret, *rest = entry.split(":")
    if len(rest) > 2:
        raise ValueError("an API key is key, key:role or key:role:name")
    role = rest[0] if rest else "client"
    if role not in ROLES:
        raise ValueError(f"unknown API key role {role!r}; use one of {', '.join(ROLES)}")
    if len(secret) < 16:
        raise ValueError("API keys must be at least 16 characters")
    digest = hashlib.sha256(secret.encode()).digest()
    name = rest[1] if len(rest) == 2 else f"key-{digest.hex()[:8]}"
    if not _KEY_NAME.fullmatch(name):
        raise ValueError("an API key's name is 1 to 64 letters, digits and ._-")
    return ApiKey(digest, role, name)  # type: ignore[arg-type]  # checked above


class BatchingOverride(BaseModel):
    """Per-model batching settings that win over the model card's defaults."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(default=None, ge=1, le=65536)
    max_queue_delay_ms: float | None = Field(default=None, ge=0.0, le=10_000.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DEEPSERVE_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # inputs may be API keys
    )

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    state_dir: Path = Field(
        default=Path("state"),
        description="Where the service keeps what it must not lose: the fraud history.",
    )
    fraud_store: str = Field(
        default="",
        description="Where the fraud history lives: empty for the embedded store (SQLite "
        "under the state directory, one process), or a `redis://` (`rediss://`) URL that "
        "replicas share.",
        pattern=r"^$|^rediss?://",
    )
    fraud_retention_days: int = Field(
        default=37,
        ge=31,
        le=3650,
        description="Days of event time the fraud history keeps (30-day windows plus the "
        "7-day label delay at least).",
    )
    max_labels_per_request: int = Field(default=10_000, ge=1, description="Labels per request.")
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol's gRPC service; 0 turns gRPC off.",
    )
    model_repository: Path = Field(
        default=Path("models"), description="Folder of `<name>/<version>/model.{onnx,json}`."
    )
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated model names to load; empty loads every model found.",
    )
    poll_interval_s: float = Field(
        default=5.0, ge=0, description="How often to look for new or removed versions; 0: never."
    )
    keep_versions: int = Field(
        default=0,
        ge=0,
        description="Ready versions kept per model, newest first (a fraud model keeps as many "
        "that need no history beside those that do); 0: all.",
    )
    default_image_model: str = Field(
        default="cifar10", description="Model behind the `POST /v1/classify` shortcut."
    )
    default_fraud_model: str = Field(
        default="fraud", description="Model behind the `POST /v1/fraud/score` shortcut."
    )

    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto: CUDA when a GPU and the CUDA provider are present, else CPU.",
    )
    tensorrt: bool = Field(default=False, description="Put TensorRT ahead of CUDA on a GPU.")
    cuda_device_id: int = Field(default=0, ge=0, description="Which GPU to run on.")
    cuda_provider_options: dict[str, str] = Field(
        default_factory=dict, description="Extra CUDA execution provider options (JSON object)."
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime intra-op threads per session; 0: one per core."
    )
    inter_op_threads: int = Field(default=1, ge=0, description="ONNX Runtime inter-op threads.")
    allow_spinning: bool = Field(
        default=False,
        description="Let ONNX Runtime threads spin between runs: faster on idle machines, "
        "but they compete with the server for the CPU.",
    )

    max_batch_size: int | None = Field(
        default=None, ge=1, le=65536, description="Overrides every model card's batch size."
    )
    max_queue_delay_ms: float | None = Field(
        default=None, ge=0.0, le=10_000.0, description="Overrides every card's queue delay."
    )
    batching: dict[str, BatchingOverride] = Field(
        default_factory=dict,
        description='Per-model overrides, JSON: {"fraud": {"max_batch_size": 1}}.',
    )
    max_queue_items: int = Field(
        default=65_536,
        ge=1,
        description="Items a model may hold queued before answering 503 (a memory bound; "
        "requests that would wait past their deadline are refused before that).",
    )
    prompt_refusals_per_s: float = Field(
        default=100.0,
        ge=0.0,
        description="Overload refusals (503) answered at once per second; beyond that, each "
        "is held `REFUSAL_PAUSE_MS` first, so clients that retry at once cannot starve the "
        "model.",
    )
    refusal_pause_ms: float = Field(
        default=100.0, ge=0.0, le=1000.0, description="How long a paced 503 is held."
    )
    inline_budget_ms: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        description="Batches that ran within this time at warm-up run on the event loop: a "
        "hop to the model's thread costs more than they do. 0: always on the model's thread.",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Run models through ONNX Runtime's I/O binding: input and output buffers "
        "made once per batch size (the buckets; powers of two up to the full batch if none "
        "are set) on the model's device, only the output copied back. auto: where a GPU "
        "serves.",
    )
    fp16: bool = Field(
        default=True,
        description="On a GPU, serve a model's float16 graph where its card has one (exported "
        "with `--fp16`, published only where its parity held); with TensorRT, build float16 "
        "engines for those models. Never on the CPU.",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="On CUDA, capture each batch size's run once and replay it (needs I/O "
        "binding, which it turns on, and a graph that runs wholly on CUDA).",
    )
    batch_buckets: Annotated[list[Annotated[int, Field(ge=1)]], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated batch sizes: each batch is padded (with copies of its "
        "last row) up to the next, so that a model sees only these shapes, as CUDA graphs and "
        "TensorRT's profiles need; a model's full batch is always one. Empty: no padding, "
        "what the CPU wants.",
    )
    request_timeout_ms: float = Field(
        default=10_000.0, gt=0, description="Deadline of a request; header X-Request-Timeout-Ms."
    )
    max_request_timeout_ms: float = Field(
        default=60_000.0, gt=0, description="The largest deadline a client may ask for."
    )

    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest image (width x height) accepted."
    )
    max_images_per_request: int = Field(default=64, ge=1, description="Images per request.")
    max_transactions_per_request: int = Field(
        default=1000, ge=1, description="Transactions per request."
    )
    decode_threads: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=1,
        description="Threads that decode images off the event loop.",
    )
    inline_decode_bytes: int = Field(
        default=8 * 1024,
        ge=0,
        description="Requests whose images total at most this many bytes decode on the event "
        "loop: a thumbnail decodes faster than the hop to a decode thread. 0: never.",
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Allocations between young-generation garbage collections (Python's "
        "default is 700): requests allocate many short-lived objects and few cycles, so "
        "collecting less often saves CPU. 0: Python's default.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry instrumentation, through the providers "
        "configured globally (traces, metrics, logs). Off: deepserve exports Prometheus metrics "
        "and JSON request logs, and the instrumentation's check costs every request.",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long accepted requests may take to finish."
    )

    api_keys: Annotated[list[ApiKey], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys, `key`, `key:role` or `key:role:name`; roles "
        "client (the default), analyst, admin; empty: no authentication.",
    )
    auth_probes_and_metrics: bool = Field(
        default=False, description="Require a key on /healthz, /readyz and /metrics as well."
    )
    console: bool = Field(
        default=True, description="Serve the web console at / (off: / answers 404)."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty: none."
    )

    @field_validator("models", "cors_origins", "batch_buckets", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        return _split(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        entries = _split(value)
        if isinstance(entries, list):  # kept as digests from here on
            return [parse_api_key(e) if isinstance(e, str) else e for e in entries]
        return entries

    def registry_config(self) -> serving.RegistryConfig:
        """What the model registry and its runtimes are told."""
        return serving.RegistryConfig(
            repository=self.model_repository,
            models=tuple(self.models),
            keep_versions=self.keep_versions,
            unload_grace_s=self.shutdown_grace_s,
            device=serving.DeviceConfig(
                self.device,
                self.tensorrt,
                self.cuda_device_id,
                self.cuda_provider_options,
                tensorrt_cache=self.state_dir / "tensorrt",
                cuda_graphs=self.cuda_graphs,
                fp16=self.fp16,
            ),
            runtime=serving.RuntimeConfig(
                session=serving.SessionConfig(
                    self.intra_op_threads, self.inter_op_threads, self.allow_spinning
                ),
                max_queue_items=self.max_queue_items,
                inline_budget_ms=self.inline_budget_ms,
                batch_buckets=tuple(self.batch_buckets),
                io_binding="on" if self.cuda_graphs else self.io_binding,
                batching=serving.BatchingOverride(self.max_batch_size, self.max_queue_delay_ms),
                batching_by_model={
                    name: serving.BatchingOverride(b.max_batch_size, b.max_queue_delay_ms)
                    for name, b in self.batching.items()
                },
            ),
        )

    def decode_config(self) -> serving.DecodeConfig:
        return serving.DecodeConfig(
            self.decode_threads, self.inline_decode_bytes, self.max_image_pixels
        )


def _split(value: object) -> object:
    """A comma-separated environment value as a list; lists pass through."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value
