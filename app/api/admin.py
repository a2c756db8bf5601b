"""Admin routes: load and unload model versions while the server runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import RegistryDep
from app.api.models import ModelInfo, model_info

router = APIRouter(prefix="/v1/models", tags=["admin"])


@router.post("/{model}/load", summary="Load a model's versions from the repository")
async def load(model: str, registry: RegistryDep) -> ModelInfo:
    await registry.load(model)
    return model_info(registry, model)


@router.post("/{model}/unload", summary="Stop serving one version, or all of them")
async def unload(
    model: str,
    registry: RegistryDep,
    version: Annotated[int | None, Query(ge=1, description="Default: every version.")] = None,
) -> dict[str, object]:
    unloaded = await registry.unload(model, version)
    return {"model": model, "unloaded": unloaded}
