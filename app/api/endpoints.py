"""The endpoint table: each inference endpoint once, read by the dispatcher that routes its
requests and by the OpenAPI document that describes them.

Inference endpoints are not FastAPI routes: for a small model, FastAPI's route matching and
dependency solving cost more than the inference. An endpoint here names its path template,
its handler, its query parameters and what the documentation says of it; the dispatcher
(`app.api.dispatch`) does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from app.api.auth import Access
from app.api.services import Services
from app.codecs.open_inference import parse_version
from app.errors import ValidationFailed
from app.serving.data_plane import InferenceCall, RequestReport
from app.settings import ApiKey, Settings


@dataclass(frozen=True)
class QueryParameter:
    """An optional query parameter: a positive integer, one of `choices`, or `text` that the
    handler reads."""

    name: str
    description: str
    choices: tuple[str, ...] = ()
    text: bool = False


@dataclass(slots=True)  # one per request: a frozen dataclass costs twice as much to build
class EndpointCall:
    """A request matched to an endpoint, its envelope checked: key, path, query, deadline."""

    request: Request
    services: Services
    model: str | None  # None where the endpoint is about no model (`GET /v2`)
    params: Mapping[str, str]  # from the path
    query: Mapping[str, int | str | None]
    deadline: float  # on time.monotonic()
    report: RequestReport
    client_gone: Callable[[], Awaitable[object]]
    key: ApiKey | None = None  # the API key presented, where keys are configured

    @property
    def by(self) -> str | None:
        """Who acts, for the records that say so: the key's name, never the key."""
        return None if self.key is None else self.key.name

    def inference(self) -> InferenceCall:
        """The call for the data plane; a version in the path or `?version=` pins one."""
        assert self.model is not None, "an inference endpoint names a model"
        return InferenceCall(
            self.model, self.version(), self.deadline, self.report, self.client_gone
        )

    def number(self, name: str) -> int | None:
        """A positive-integer query parameter (checked by the dispatcher)."""
        value = self.query.get(name)
        return value if isinstance(value, int) else None

    def limit(self, default: int, maximum: int) -> int:
        """`?limit=`: `default` where absent; a 422 above `maximum`."""
        limit = self.number("limit") or default
        if limit > maximum:
            message = f"at most {maximum}"
            raise ValidationFailed(
                f"query.limit: {message}", [{"field": "query.limit", "message": message}]
            )
        return limit

    def version(self) -> int | None:
        raw = self.params.get("version")
        if raw is None:
            return self.number("version")
        return parse_version(str(self.model), raw)


Handler = Callable[[EndpointCall], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # a template: `{model}` stands for a path segment
    handler: Handler
    summary: str
    response_model: type[BaseModel] | None
    request_body: Mapping[str, Any] | None  # the OpenAPI requestBody object
    query: tuple[QueryParameter, ...] = ()
    # Where the path names no model, which setting does.
    default_model: Callable[[Settings], str] | None = None
    tags: tuple[str, ...] = ("inference",)
    name: str = ""  # names the OpenAPI operation; default: the handler's name
    access: Access = "client"
    schemas: tuple[type[BaseModel], ...] = ()  # more that the request body refers to
    about_model: bool = True  # False where no model is concerned (`GET /v2`)
    segments: tuple[str, ...] = field(init=False, repr=False)
    _literals: tuple[tuple[int, str], ...] = field(init=False, repr=False)
    _parameters: tuple[tuple[int, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        segments = tuple(self.path.split("/"))
        object.__setattr__(self, "segments", segments)
        parameters = tuple((i, s[1:-1]) for i, s in enumerate(segments) if s.startswith("{"))
        literals = tuple((i, s) for i, s in enumerate(segments) if not s.startswith("{"))
        object.__setattr__(self, "_parameters", parameters)
        object.__setattr__(self, "_literals", literals[::-1])  # the last differ most
        names_model = self.default_model is not None or "{model}" in self.segments
        if self.about_model and not names_model:
            raise ValueError(f"{self.path}: name a model in the path or a default_model")

    @property
    def operation_id(self) -> str:
        """As FastAPI names operations (`score_default_v1_fraud_score_post`), so that
        clients generated from the OpenAPI document keep their method names."""
        words = re.sub(r"\W", "_", f"{self.name or self.handler.__name__}{self.path}")
        return f"{words}_{self.method.lower()}"

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """Path parameters when `parts` (a path split at `/`) fits the template."""
        if len(parts) != len(self.segments):
            return None
        for index, segment in self._literals:
            if parts[index] != segment:
                return None
        params = {name: parts[index] for index, name in self._parameters}
        return params if all(params.values()) else None


class EndpointTable:
    """Every endpoint, looked up by method and path."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        seen = {(e.method, e.path) for e in endpoints}
        if len(seen) != len(endpoints):
            raise ValueError("an endpoint is declared twice")
        # Paths without parameters are found in one look-up: the shortcuts are the busiest.
        self._literal = {
            (e.method, e.path): e for e in endpoints if not any("{" in s for s in e.segments)
        }
        # Templates by length and last segment (`infer`, `ready`...; None where the last
        # is a parameter), so that a path is matched against a few templates, not all.
        self._templates: dict[tuple[int, str | None], list[Endpoint]] = {}
        for e in endpoints:
            last = None if e.segments[-1].startswith("{") else e.segments[-1]
            self._templates.setdefault((len(e.segments), last), []).append(e)

    def match(
        self, method: str, path: str
    ) -> tuple[Endpoint, dict[str, str]] | list[Endpoint] | None:
        """The endpoint and its path parameters; where only other methods serve the path,
        those endpoints (for a 405); None where no endpoint does."""
        literal = self._literal.get((method, path))
        if literal is not None:
            return literal, {}
        parts = path.split("/")
        by_last = self._templates.get((len(parts), parts[-1]), ())
        by_length = self._templates.get((len(parts), None), ())
        others: list[Endpoint] = []
        for endpoint in (*by_last, *by_length):
            params = endpoint.match(parts)
            if params is None:
                continue
            if endpoint.method == method:
                return endpoint, params
            others.append(endpoint)
        return others or None
