"""The dispatcher of the endpoint table: the only routing of inference requests.

An ASGI middleware inside the request log, drain and CORS middlewares, so those apply to
inference as to any route. It matches a request to its endpoint, checks the envelope every
endpoint shares (API key, query parameters, deadline header), calls the endpoint's
handler, and answers errors through `app.api.errors`. Requests no endpoint serves go on to
FastAPI's routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.api.auth import check_access
from app.api.deps import DEADLINE_HEADER, request_deadline
from app.api.endpoints import Endpoint, EndpointCall, EndpointTable
from app.api.errors import error_format, response_for
from app.api.request_log import request_report
from app.api.services import Services


@dataclass(frozen=True)
class RouteTemplate:
    """Stands in for the matched route in the ASGI scope: only its `path` is read."""

    path: str


_positive = TypeAdapter(Annotated[int, Field(ge=1)])


class EndpointDispatcher:
    def __init__(self, app: ASGIApp, table: EndpointTable, services: Services) -> None:
        self.app = app
        self.table = table
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        match = self.table.match(scope["method"], path)
        if match is None and path.endswith("/") and self.table.match(scope["method"], path[:-1]):
            # As FastAPI's routes did: the same path without the slash, same method and body.
            await _redirect(path[:-1], scope, receive, send)
            return
        if match is None:
            await self.app(scope, receive, send)
            return
        if isinstance(match, list):
            scope["route"] = RouteTemplate(match[0].path)  # not the raw path: a bounded label
            response = _method_not_allowed(path, scope["method"], [e.method for e in match])
        else:
            endpoint, params = match
            scope["route"] = RouteTemplate(endpoint.path)  # logs and metrics group by it
            try:
                call = self._call(endpoint, params, Request(scope, receive))
                response = await endpoint.handler(call)
            except Exception as exc:
                where = f"{scope['method']} {scope['path']}"
                form = error_format(path)
                response = await response_for(exc, self.services.refusals, where, form)
        await response(scope, receive, send)

    def _call(self, endpoint: Endpoint, params: dict[str, str], request: Request) -> EndpointCall:
        settings = self.services.settings
        headers = request.headers
        key = check_access(headers, settings, endpoint.access)
        model = params.get("model")
        if model is None and endpoint.default_model is not None:
            model = endpoint.default_model(settings)
        return EndpointCall(
            request=request,
            services=self.services,
            model=model,
            params=params,
            query=_query(request, endpoint),
            deadline=request_deadline(headers.get(DEADLINE_HEADER), settings),
            report=request_report(request.scope),
            client_gone=_disconnect_of(request),
            key=key,
        )


def _query(request: Request, endpoint: Endpoint) -> dict[str, int | str | None]:
    """The endpoint's query parameters, each optional: a positive integer, a choice, or
    text."""
    names = [parameter.name for parameter in endpoint.query]
    if not request.scope["query_string"]:
        return dict.fromkeys(names)  # the usual case: nothing to parse
    values: dict[str, int | str | None] = {}
    problems: list[dict[str, Any]] = []
    for parameter in endpoint.query:
        name = parameter.name
        raw = request.query_params.get(name)
        if raw is None:
            values[name] = None
            continue
        if parameter.text:
            values[name] = raw
            continue
        if parameter.choices:
            if raw not in parameter.choices:
                message = "must be one of " + ", ".join(parameter.choices)
                problems.append({"loc": ("query", name), "msg": message})
            values[name] = raw
            continue
        try:
            values[name] = _positive.validate_python(raw, strict=False)
        except ValidationError as exc:
            problems += [{**p, "loc": ("query", name, *p["loc"])} for p in exc.errors()]
    if problems:
        raise errors.ValidationFailed.from_pydantic(problems)
    return values


def _disconnect_of(request: Request) -> Callable[[], Awaitable[None]]:
    """A waiter for the client's hang-up. Called once the body is read, so the next ASGI
    message can only be the disconnect."""

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return client_gone


async def _redirect(path: str, scope: Scope, receive: Receive, send: Send) -> None:
    query = scope["query_string"].decode("latin-1")
    location = f"{path}?{query}" if query else path
    await RedirectResponse(location, status_code=307)(scope, receive, send)


def _method_not_allowed(path: str, method: str, allowed: list[str]) -> Response:
    methods = ", ".join(sorted(set(allowed)))
    return error_format(path).response(
        405,
        "method_not_allowed",
        f"{method} is not allowed here; use {methods}",
        {"Allow": methods},
    )
