"""The Open Inference Protocol's operations, once for both transports.

REST (`rest.py`) and gRPC (`grpc_service.py`) parse their requests, call these, and write
the answers in their own wire format. Inference goes through the same data plane as `/v1`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import app
from app.api.services import Services
from app.codecs.open_inference import (
    CheckedRequest,
    InferRequest,
    check_request,
    model_config,
    model_metadata,
    output_tensors,
)
from app.codecs.tensors import Tensor
from app.errors import InvalidInput
from app.model_card import ModelCard
from app.serving.data_plane import InferenceCall
from app.serving.registry import ModelState
from app.settings import Settings

SERVER_NAME = "deepserve"
SERVER_EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_configuration",
]

# The repository extension's states, as Triton names them.
_REPOSITORY_STATE = {
    ModelState.READY: "READY",
    ModelState.LOADING: "LOADING",
    ModelState.FAILED: "UNAVAILABLE",
}


@dataclass(slots=True)
class InferAnswer:
    model_name: str
    model_version: str
    id: str | None
    outputs: list[tuple[Tensor, bool]]  # each tensor, and whether it goes as binary data


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": app.__version__, "extensions": SERVER_EXTENSIONS}


def server_not_ready(services: Services) -> list[str]:
    """Why the server is not ready; empty when it is."""
    problems = services.registry.not_ready()
    if services.drain.draining:
        problems = ["the server is shutting down", *problems]
    return problems


def served_card(services: Services, model: str, version: int | None) -> ModelCard:
    """The card of the version a request for (model, version) would be served by."""
    return services.registry.resolve(model, version).model_card


def metadata(services: Services, model: str, version: int | None) -> dict[str, Any]:
    card = served_card(services, model, version)
    ready = [v.version for v in services.registry.versions(model) if v.state is ModelState.READY]
    return model_metadata(card, ready if version is None else [card.version])


def config(services: Services, model: str, version: int | None) -> dict[str, Any]:
    runtime = services.registry.resolve(model, version)
    card = runtime.model_card
    return model_config(card, max_rows(card, services.settings), runtime.max_queue_delay_ms)


async def infer(
    services: Services, call: InferenceCall, read: Callable[[], Awaitable[InferRequest]]
) -> InferAnswer:
    """Read the request once admitted, check it against the serving version's card, infer,
    and shape the outputs the request asked for."""

    async def read_checked(card: ModelCard) -> CheckedRequest:
        return check_request(await read(), card, max_rows(card, services.settings))

    card, checked, probabilities = await services.data_plane.infer(call, read_checked)
    request = checked.request
    return InferAnswer(
        card.name, str(card.version), request.id, output_tensors(request, card, probabilities)
    )


def repository_index(services: Services, ready_only: bool) -> list[dict[str, Any]]:
    """Every version the registry knows, with its state; versions unloaded on request stay
    listed (`UNAVAILABLE`, "unloaded"), as Triton lists them, so they can be loaded again."""
    registry = services.registry
    index = []
    for name in registry.names():
        for entry in registry.versions(name):
            if ready_only and entry.state is not ModelState.READY:
                continue
            item = {"name": name, "version": str(entry.version)}
            item["state"] = _REPOSITORY_STATE[entry.state]
            if entry.reason:
                item["reason"] = entry.reason
            index.append(item)
    if not ready_only:
        for name, version in registry.unloaded():
            index.append(
                {
                    "name": name,
                    "version": str(version),
                    "state": "UNAVAILABLE",
                    "reason": "unloaded",
                }
            )
    return sorted(index, key=lambda item: (item["name"], int(item["version"])))


async def load(services: Services, model: str, parameters: Iterable[str] = ()) -> None:
    """Load the model's versions on disk; overrides (Triton's `config`, `file:...`) are
    refused, not ignored: versions come from the repository only."""
    overrides = sorted(parameters)
    if overrides:
        raise InvalidInput(
            f"load takes no parameters here ({', '.join(overrides)}): versions load from "
            "the model repository as they are"
        )
    await services.registry.load(model)


async def unload(services: Services, model: str) -> None:
    """Unload every version; unloading a model twice is no error (as in Triton)."""
    await services.registry.unload(model)


def max_rows(card: ModelCard, settings: Settings) -> int:
    """The most rows one request may send: images or transactions, as `/v1` allows."""
    if card.kind == "image_classifier":
        return settings.max_images_per_request
    return settings.max_transactions_per_request
