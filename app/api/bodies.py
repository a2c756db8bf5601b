"""Reading request bodies within limits: raw bytes, JSON, images (multipart or one image)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType, ValidationFailed


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


async def read_json(request: Request, limit: int) -> bytes:
    """The body of a request that must be JSON (checked by its Content-Type), unparsed."""
    media_type = _media_type(request)
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not accepted; send application/json"
        )
    return await read_body(request, limit)
