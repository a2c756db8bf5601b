"""What the server has: models, their versions, kinds, inputs, labels, metrics and state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import RegistryDep
from app.codecs.transactions import needs_history
from app.fraud.features import feature_set_of
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
    feature_set: str | None = None
    thresholds: dict[str, Any] | None = None
    metrics: dict[str, int | float | str] | None = None
    batching: BatchingInfo | None = None
    providers: list[str] | None = None
    precision: str | None = None  # fp32, or fp16 where a GPU serves the card's float16 graph
    provenance: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    name: str
    served_version: int | None
    # Where it differs: what routes that take the client's own inputs serve (`/score`, v2),
    # the newest version that needs no feature only the history computes.
    served_version_for_sent_inputs: int | None = None
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
                "feature_set": (
                    card.tabular.feature_set or feature_set_of(card.tabular.features)
                    if card.tabular
                    else None
                ),
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
                "precision": entry.runtime.precision,
            }
        )
    return info


def model_info(registry: ModelRegistry, name: str) -> ModelInfo:
    versions = registry.versions(name)
    ready = [v for v in versions if v.state is ModelState.READY]
    served = max((v.version for v in ready), default=None)
    sent = [
        v.version for v in ready if v.model_card is not None and not needs_history(v.model_card)
    ]
    for_sent_inputs = max(sent, default=None)
    return ModelInfo(
        name=name,
        served_version=served,
        served_version_for_sent_inputs=None if for_sent_inputs == served else for_sent_inputs,
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
