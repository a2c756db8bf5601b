"""Optional API keys. Off unless `DEEPSERVE_API_KEYS` is set.

`DEEPSERVE_API_KEYS=key1,key2:admin`: any listed key may call inference and model routes;
`:admin` marks the keys that may also call the admin routes (model load and unload).
Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys are compared in
constant time and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request

from app.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class ApiKey:
    digest: bytes  # sha256 of the key: equal-length inputs for compare_digest
    admin: bool


def parse_keys(entries: list[str]) -> list[ApiKey]:
    keys = []
    for entry in entries:
        secret, _, role = entry.partition(":")
        if role not in ("", "admin"):
            raise ValueError(f"unknown API key role {role!r}; use key or key:admin")
        if len(secret) < 16:
            raise ValueError("API keys must be at least 16 characters")
        keys.append(ApiKey(hashlib.sha256(secret.encode()).digest(), role == "admin"))
    return keys


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def _match(keys: list[ApiKey], presented: str) -> ApiKey | None:
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in keys:  # no early exit: the time taken does not say which key matched
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found


async def require_key(request: Request) -> None:
    """Dependency for inference and model routes."""
    keys: list[ApiKey] = request.app.state.api_keys
    if not keys:
        return
    presented = _presented(request)
    if presented is None or _match(keys, presented) is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")


async def require_admin(request: Request) -> None:
    """Dependency for admin routes: an admin key when keys are configured."""
    keys: list[ApiKey] = request.app.state.api_keys
    if not keys:
        return
    presented = _presented(request)
    key = _match(keys, presented) if presented is not None else None
    if key is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    if not key.admin:
        raise Forbidden("this API key may not call admin routes")
