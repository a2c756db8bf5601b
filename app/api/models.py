"""What the server has: models, their versions, kinds, inputs, labels, metrics and state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import RegistryDep
from app.model_card import TensorSpec
from app.serving.registry import ModelRegistry, ModelState, ModelVersion

router = APIRouter(prefix="/v1/models", tags=["models"])


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_queue_delay_ms: float


class VersionInfo(BaseModel):
    version: int
    state: ModelState
    reason: str | None = None
    kind: str | None = None
    description: str | None = None
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    labels: list[str] | None = None
    features: list[str] | None = None
    thresholds: dict[str, Any] | None = None
    metrics: dict[str, int | float | str] | None = None
    batching: BatchingInfo | None = None
    providers: list[str] | None = None
    provenance: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    name: str
    served_version: int | None
    versions: list[VersionInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]


def _version_info(entry: ModelVersion) -> VersionInfo:
    info = VersionInfo(version=entry.version, state=entry.state, reason=entry.reason)
    card = entry.model_card
    if card is not None:
        info = info.model_copy(
            update={
                "kind": card.kind,
                "description": card.description,
                "inputs": card.inputs,
                "outputs": card.outputs,
                "labels": card.labels,
                "features": card.tabular.features if card.tabular else None,
                "thresholds": card.thresholds.model_dump() if card.thresholds else None,
                "metrics": card.metrics,
                "provenance": card.provenance.model_dump(mode="json"),
            }
        )
    if entry.runtime is not None:
        info = info.model_copy(
            update={
                "batching": BatchingInfo(
                    max_batch_size=entry.runtime.max_batch_size,
                    max_queue_delay_ms=entry.runtime.max_queue_delay_ms,
                ),
                "providers": entry.runtime.providers,
            }
        )
    return info


def model_info(registry: ModelRegistry, name: str) -> ModelInfo:
    versions = registry.versions(name)
    ready = [v.version for v in versions if v.state is ModelState.READY]
    return ModelInfo(
        name=name,
        served_version=max(ready, default=None),
        versions=[_version_info(v) for v in versions],
    )


@router.get("", summary="Every model and version, with its state")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(models=[model_info(registry, name) for name in registry.names()])


@router.get(
    "/{model}",
    summary="One model's versions, inputs, labels, metrics and state",
    responses={404: {"description": "No such model"}},
)
async def get_model(model: str, registry: RegistryDep) -> ModelInfo:
    return model_info(registry, model)
