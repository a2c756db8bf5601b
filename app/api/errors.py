"""One table from domain errors to HTTP statuses, and the one place that answers an error.

Every route and the endpoint dispatcher answer errors here; a client mistake is never a 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app import errors
from app.api.refusals import RefusalPacer
from app.api.responses import ErrorFormat, error_format
from app.api.services import services_of

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.ServingError], int] = {
    errors.InvalidInput: 400,
    errors.WrongModelKind: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.ModelNotFound: 404,
    errors.NotInHistory: 404,
    errors.NeedsHistory: 422,
    errors.AlertNotFound: 404,
    errors.AlertResolved: 409,
    errors.FreezeConflict: 409,
    errors.PaymentConflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.ValidationFailed: 422,
    errors.InferenceFailed: 500,
    errors.ModelNotReady: 503,
    errors.Overloaded: 503,
    errors.ShuttingDown: 503,
    errors.StoreUnavailable: 503,
    errors.DeadlineExceeded: 504,
    errors.ClientGone: 499,  # nginx's status for it: nobody reads it, logs and metrics do
}

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
}


def status_for(exc: errors.ServingError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


async def response_for(
    exc: Exception, refusals: RefusalPacer, where: str, form: ErrorFormat
) -> Response:
    """The response for any exception a request raised: a domain error's status and shape
    (overload refusals paced first), anything else a logged 500."""
    if isinstance(exc, errors.ServingError):
        if isinstance(exc, errors.Overloaded):
            await refusals.pace()
        return serving_error_response(exc, form)
    logger.error("unhandled error on %s", where, exc_info=exc)
    return form.response(500, "internal", "internal server error")


def http_headers_for(exc: errors.ServingError, status: int) -> dict[str, str] | None:
    """Retry-After on refusals that pass, WWW-Authenticate on a missing key."""
    if isinstance(exc, errors.Overloaded):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, errors.Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if status == 503:
        return {"Retry-After": "1"}
    return None


def serving_error_response(exc: errors.ServingError, form: ErrorFormat) -> Response:
    """The response for a domain error: its status, headers (Retry-After...) and shape."""
    status = status_for(exc)
    if isinstance(exc, errors.InferenceFailed):
        logger.error("inference failed: %s", exc.message)
    details = exc.details if isinstance(exc, errors.ValidationFailed) else None
    return form.response(status, exc.code, exc.message, http_headers_for(exc, status), details)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    failure = errors.ValidationFailed.from_pydantic(list(exc.errors()))
    form = error_format(request.url.path)
    return form.response(422, failure.code, failure.message, details=failure.details)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "http_error")
    form = error_format(request.url.path)
    return form.response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _any_error(request: Request, exc: Exception) -> Response:
    where = f"{request.method} {request.url.path}"
    form = error_format(request.url.path)
    return await response_for(exc, services_of(request.app).refusals, where, form)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ServingError, _any_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _any_error)
