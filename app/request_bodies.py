"""Reading request bodies within limits: raw bytes, images (multipart or raw), transactions."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.errors import (
    InvalidInput,
    PayloadTooLarge,
    ServingError,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.transaction_decoder import decode_transactions
from app.transactions import Transaction, TransactionBatch, TransactionRows

_one_transaction = TypeAdapter(Transaction)
_many_transactions = TypeAdapter(TransactionBatch)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes before reading them where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("the Content-Length header is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_images(request: Request, body_limit: int, max_images: int) -> list[bytes]:
    """The encoded images of a classify request, in request order."""
    media_type = _media_type(request)
    if media_type.startswith("image/"):
        body = await read_body(request, body_limit)
        if not body:
            raise InvalidInput("the body is empty; send an image")
        return [body]
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not accepted; send multipart/form-data "
            "with `file` parts, or one image with an image/* Content-Type"
        )
    body = await read_body(request, body_limit)
    parser = MultiPartParser(
        request.headers, _once(body), max_files=max_images, max_fields=16, max_part_size=body_limit
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        message = str(exc.message)
        if "Too many files" in message:
            raise PayloadTooLarge(f"at most {max_images} images per request") from None
        raise InvalidInput(f"malformed multipart body: {message}") from None
    try:
        files = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
        if not files:
            raise ValidationFailed("file: send at least one `file` part holding an image")
        return [await part.read() for part in files]
    finally:
        await form.close()


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body
    yield b""


def require_json(request: Request) -> None:
    media_type = _media_type(request)
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not accepted; send application/json"
        )


def parse_transactions(body: bytes, max_transactions: int) -> TransactionRows:
    """One transaction object, or `{"transactions": [...]}`. Well-formed bodies are decoded
    by msgspec (`app.transaction_decoder`); pydantic-core validates the rest from the
    bytes, and words the refusals."""
    if not body:
        raise InvalidInput("the body is empty; send a transaction as JSON")
    transactions = decode_transactions(body)
    if transactions is None:
        try:
            transactions = TransactionRows.of(_validate(body))
        except ValidationError as exc:
            raise _body_error(exc.errors(include_url=False), body) from None
    if len(transactions) > max_transactions:
        raise PayloadTooLarge(
            f"{len(transactions)} transactions; at most {max_transactions} per request"
        )
    return transactions


def _validate(body: bytes) -> list[Transaction]:
    if b'"transactions"' in body:  # a batch, or a lone transaction with that word in a value
        try:
            return _many_transactions.validate_json(body)["transactions"]
        except ValidationError as exc:
            if not any(
                p["type"] == "missing" and p["loc"] == ("transactions",) for p in exc.errors()
            ):
                raise
    return [_one_transaction.validate_json(body)]


def _body_error(problems: list[Any], body: bytes) -> ServingError:
    """The HTTP-facing error for a body pydantic refused: 400 for what is not JSON (NaN and
    Infinity included), 422 for fields."""
    types = {p["type"] for p in problems}
    if "json_invalid" in types:
        return InvalidInput(f"the body is not valid JSON: {problems[0]['msg']}")
    if "finite_number" in types and _has_non_json_numbers(body):
        return InvalidInput("the body is not valid JSON: NaN and Infinity are not JSON numbers")
    return ValidationFailed.from_pydantic(_merge_union_branches(problems))


def _has_non_json_numbers(body: bytes) -> bool:
    try:
        orjson.loads(body)  # strict JSON: refuses NaN and Infinity
    except orjson.JSONDecodeError:
        return True
    return False


IDENTIFIER_RULE = "must be a string, or an integer within 64 bits"


def _merge_union_branches(problems: list[Any]) -> list[Any]:
    """An identifier is a string or a 64-bit integer: pydantic reports one error per branch,
    at `field.str` and `field.constrained-int`; say it once, at the field."""
    merged: list[Any] = []
    for problem in problems:
        loc = tuple(problem["loc"])
        if loc and loc[-1] in ("str", "constrained-int"):
            loc = loc[:-1]
            if merged and tuple(merged[-1]["loc"]) == loc:
                continue
            problem = {**problem, "loc": loc, "msg": IDENTIFIER_RULE}
        merged.append(problem)
    return merged
