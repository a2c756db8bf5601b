"""JSON responses encoded with orjson (faster than the standard encoder, same JSON), and the
shapes of errors: deepserve's `{"error": {"code", "message", "details"?}}`, and the Open
Inference Protocol's `{"error": "message"}` under `/v2`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return json_response({"error": body}, status, headers)


@dataclass(frozen=True)
class ErrorFormat:
    """How a protocol writes an error: its body, and the statuses where it departs from
    `STATUS_BY_ERROR`."""

    respond: Callable[[int, str, str, Mapping[str, str] | None, list[Any] | None], Response]
    statuses: Mapping[int, int] = field(default_factory=dict)

    def response(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        details: list[Any] | None = None,
    ) -> Response:
        return self.respond(self.statuses.get(status, status), code, message, headers, details)


def _open_inference_error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None,
    details: list[Any] | None,
) -> Response:
    return json_response({"error": message}, status, headers)


DEEPSERVE_ERRORS = ErrorFormat(error_response)
# The Open Inference Protocol: `{"error": "message"}`, and 400 for every bad request.
OPEN_INFERENCE_ERRORS = ErrorFormat(_open_inference_error, {415: 400, 422: 400})
OPEN_INFERENCE_PREFIX = "/v2"


def error_format(path: str) -> ErrorFormat:
    """How errors are written under a path: the protocol's way under `/v2`, even for its
    unknown routes and its refusals while draining."""
    if path == OPEN_INFERENCE_PREFIX or path.startswith(OPEN_INFERENCE_PREFIX + "/"):
        return OPEN_INFERENCE_ERRORS
    return DEEPSERVE_ERRORS
