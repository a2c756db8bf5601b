"""The OpenAPI document (FastAPI's routes and the endpoint table) and the interactive docs,
served from packaged assets so that `/docs` works with no internet."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import HTMLResponse

from app.api.deps import DEADLINE_HEADER
from app.api.endpoints import Endpoint, EndpointTable, QueryParameter
from app.codecs.transaction_schema import Transaction, TransactionBatch

ASSETS_PATH = "/docs-assets"
REF_TEMPLATE = "#/components/schemas/{model}"

ERRORS = {
    "400": "Malformed body",
    "401": "A valid API key is required",
    "404": "Unknown model or version",
    "413": "Body, image or count too large",
    "415": "Unsupported media type",
    "422": "Invalid field",
    "503": "Overloaded or not ready",
    "504": "Deadline passed while queued",
}


def install_docs(app: FastAPI, table: EndpointTable) -> None:
    assets = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            add_endpoints(schema, table)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_endpoints(schema: dict[str, Any], table: EndpointTable) -> None:
    """Describe the table's endpoints, and the schemas their bodies and answers refer to."""
    models: list[type[BaseModel]] = [Transaction, TransactionBatch]
    paths = schema.setdefault("paths", {})
    for endpoint in table.endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
        if endpoint.response_model is not None:
            models.append(endpoint.response_model)
        models += endpoint.schemas
    _, definitions = models_json_schema(
        [(model, "validation") for model in dict.fromkeys(models)], ref_template=REF_TEMPLATE
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.get("$defs", {}))


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for name in endpoint.segments
        if name.startswith("{")
    ]
    parameters += [
        {
            "name": query.name,
            "in": "query",
            "required": False,
            "description": query.description,
            "schema": _query_schema(query),
        }
        for query in endpoint.query
    ]
    parameters.append(
        {
            "name": DEADLINE_HEADER,
            "in": "header",
            "required": False,
            "description": "This request's deadline in milliseconds, from its arrival; "
            "a request still queued at its deadline gets 504.",
            "schema": {"type": "string"},
        }
    )
    answer: dict[str, Any] = {"type": "object"}
    if endpoint.response_model is not None:
        answer = {"$ref": REF_TEMPLATE.format(model=endpoint.response_model.__name__)}
    responses: dict[str, Any] = {
        "200": {
            "description": "Successful Response",
            "content": {"application/json": {"schema": answer}},
        }
    }
    responses.update({status: {"description": text} for status, text in ERRORS.items()})
    operation = {
        "tags": list(endpoint.tags),
        "summary": endpoint.summary,
        "operationId": endpoint.operation_id,
        "parameters": parameters,
        "responses": responses,
    }
    if endpoint.request_body is not None:
        operation["requestBody"] = dict(endpoint.request_body)
    return operation


def _query_schema(query: QueryParameter) -> dict[str, Any]:
    if query.choices:
        return {"type": "string", "enum": list(query.choices)}
    if query.text:
        return {"type": "string"}
    return {"type": "integer", "minimum": 1}
