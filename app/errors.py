"""Domain errors. They know nothing about HTTP: `app.api.errors` maps them to statuses."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Base of every error the service reports to a client."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    """The request body is malformed."""

    code = "invalid_input"


class ValidationFailed(ServingError):
    """The body parsed, but a field is missing, mistyped or out of range."""

    code = "validation_failed"

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []

    @classmethod
    def from_pydantic(cls, problems: list[Any]) -> ValidationFailed:
        """One readable line naming each bad field, plus the per-field details."""
        details = [
            {"field": ".".join(str(part) for part in p["loc"]), "message": p["msg"]}
            for p in problems
        ]
        message = "; ".join(
            f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details[:5]
        )
        if len(details) > 5:
            message += f"; and {len(details) - 5} more"
        return cls(message, details)


class Unauthorized(ServingError):
    code = "unauthorized"


class Forbidden(ServingError):
    code = "forbidden"


class UnsupportedMediaType(ServingError):
    code = "unsupported_media_type"


class PayloadTooLarge(ServingError):
    code = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class ModelNotFound(ServingError):
    code = "model_not_found"


class WrongModelKind(ServingError):
    """The model exists but does not serve this endpoint (an image to a fraud model)."""

    code = "wrong_model_kind"


class ModelNotReady(ServingError):
    code = "model_not_ready"


class Overloaded(ServingError):
    """The model's queue is full; the client should retry after `retry_after_s`."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServingError):
    code = "deadline_exceeded"


class InferenceFailed(ServingError):
    """ONNX Runtime failed on a batch; only that batch's requests see this."""

    code = "inference_failed"


class ClientGone(ServingError):
    """The client closed the connection before its answer was ready."""

    code = "client_closed_request"


class ShuttingDown(ServingError):
    code = "shutting_down"


class PaymentConflict(ServingError):
    """A transaction id already recorded with other content."""

    code = "payment_conflict"


class StoreUnavailable(ServingError):
    """The fraud history cannot be read or written now (a disk full or read-only, a Redis
    that is gone); nothing of the request was recorded, so a retry is safe."""

    code = "store_unavailable"


class NotInHistory(ServingError):
    """No transaction of that card or terminal is in the fraud history."""

    code = "not_in_history"


class NeedsHistory(ServingError):
    """A model version takes inputs only the service's history computes, on a route where
    the client brings its own."""

    code = "needs_history"


class AlertNotFound(ServingError):
    code = "alert_not_found"


class AlertResolved(ServingError):
    """The alert was resolved before: each alert is resolved once."""

    code = "alert_resolved"


class FreezeConflict(ServingError):
    """Freezing a frozen card, or unfreezing one that is not frozen."""

    code = "freeze_conflict"
