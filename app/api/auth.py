"""Optional API keys. Off unless `DEEPSERVE_API_KEYS` is set.

`DEEPSERVE_API_KEYS=key1,key2:admin`: any listed key may call inference and model routes;
`:admin` marks the keys that may also call the admin routes (model load and unload).
Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>` (over gRPC, as metadata).
Keys are compared in constant time and never logged; the settings keep only their digests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from fastapi import Request

from app.api.services import services_of
from app.errors import Forbidden, Unauthorized
from app.settings import ApiKey, Settings

# Who may call an endpoint when API keys are configured.
Access = Literal["probe", "key", "admin"]


def check_key(headers: Mapping[str, str], keys: list[ApiKey], admin: bool = False) -> None:
    """Raise unless the request carries a valid key (an admin key where `admin`); no keys
    configured lets every request through. `headers`: HTTP headers, or gRPC metadata with
    lower-case names."""
    if not keys:
        return
    presented = _presented(headers)
    key = _match(keys, presented) if presented is not None else None
    if key is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    if admin and not key.admin:
        raise Forbidden("this API key may not call admin routes")


def check_access(headers: Mapping[str, str], settings: Settings, access: Access) -> None:
    """The key rule of an endpoint or gRPC call: probes need a key only where the settings
    say so, `key` any valid key, `admin` an admin key."""
    if access != "probe" or settings.auth_probes_and_metrics:
        check_key(headers, settings.api_keys, admin=access == "admin")


async def require_key(request: Request) -> None:
    """Dependency for inference and model routes."""
    check_key(request.headers, services_of(request.app).settings.api_keys)


async def require_admin(request: Request) -> None:
    """Dependency for admin routes: an admin key when keys are configured."""
    check_key(request.headers, services_of(request.app).settings.api_keys, admin=True)


def _presented(headers: Mapping[str, str]) -> str | None:
    header = headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return headers.get("x-api-key")


def _match(keys: list[ApiKey], presented: str) -> ApiKey | None:
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in keys:  # no early exit: the time taken does not say which key matched
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found
