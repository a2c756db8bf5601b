"""Reading request bodies within limits: raw bytes, images (multipart or raw), transactions."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from app.transactions import Transaction, TransactionBatch

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


def parse_transactions(body: bytes, max_transactions: int) -> list[Transaction]:
    """One transaction object, or `{"transactions": [...]}`."""
    if not body:
        raise InvalidInput("the body is empty; send a transaction as JSON")
    try:
        document = orjson.loads(body)  # rejects NaN, Infinity and absurd nesting
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValidationFailed('body: expected a transaction object or {"transactions": [...]}')
    if "transactions" in document:
        batch = document["transactions"]
        if isinstance(batch, list) and len(batch) > max_transactions:
            raise PayloadTooLarge(
                f"{len(batch)} transactions; at most {max_transactions} per request"
            )
        try:
            return list(_many_transactions.validate_python(document).transactions)
        except ValidationError as exc:
            raise ValidationFailed.from_pydantic(exc.errors()) from None
    try:
        return [_one_transaction.validate_python(document)]
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(exc.errors()) from None
