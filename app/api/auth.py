"""Optional API keys with roles. Off unless `DEEPSERVE_API_KEYS` is set.

`DEEPSERVE_API_KEYS=key1,key2:analyst:alice,key3:admin:ops`: each key has a role, `client`
unless given, and a name. A client scores and records payments and reads the models; an
analyst may also label payments, look cards and terminals up and work the alerts; an admin
may also load and unload models. A valid key with too little role gets 403.
Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>` (over gRPC, as metadata).
Keys are compared in constant time and never logged; the settings keep only their digests.
A key's name stands for it wherever the service must say who acted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from fastapi import APIRouter, Request

from app.api.services import services_of
from app.errors import Forbidden, Unauthorized
from app.settings import ApiKey, Role, Settings

# Who may call an endpoint when API keys are configured: probes (open unless the settings
# say otherwise), or a key of at least this role.
Access = Literal["probe"] | Role


def check_key(
    headers: Mapping[str, str], keys: list[ApiKey], role: Role = "client"
) -> ApiKey | None:
    """The request's key, raising unless it is valid and of at least `role`; None, letting
    every request through, when no keys are configured. `headers`: HTTP headers, or gRPC
    metadata with lower-case names."""
    if not keys:
        return None
    presented = _presented(headers)
    key = _match(keys, presented) if presented is not None else None
    if key is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    if not key.may(role):
        raise Forbidden(f"this API key's role is {key.role}; this route needs {role}")
    return key


def check_access(headers: Mapping[str, str], settings: Settings, access: Access) -> ApiKey | None:
    """The key rule of an endpoint or gRPC call; the key presented, where keys are on."""
    if access != "probe":
        return check_key(headers, settings.api_keys, access)
    if settings.auth_probes_and_metrics:
        return check_key(headers, settings.api_keys)
    return None


router = APIRouter(tags=["auth"])


@router.get("/v1/key", summary="Whether keys are required, and the role and name of the key sent")
async def whose_key(request: Request) -> dict[str, object]:
    keys = services_of(request.app).settings.api_keys
    key = check_key(request.headers, keys)
    if key is None:  # no keys configured: every route is open
        return {"keys_required": False, "role": "admin", "name": None}
    return {"keys_required": True, "role": key.role, "name": key.name}


async def require_key(request: Request) -> None:
    """Dependency for model routes: any valid key."""
    check_key(request.headers, services_of(request.app).settings.api_keys)


async def require_admin(request: Request) -> None:
    """Dependency for admin routes: an admin key when keys are configured."""
    check_key(request.headers, services_of(request.app).settings.api_keys, "admin")


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
