"""Optional API keys and CORS."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings
from tests.conftest import transaction

KEY, ANALYST, ADMIN = "k" * 20, "n" * 20, "a" * 20


@pytest.fixture
def keyed(make_client):
    return make_client(api_keys=[KEY, f"{ANALYST}:analyst:alice", f"{ADMIN}:admin"])


def test_inference_and_model_routes_need_a_key(keyed) -> None:
    response = keyed.post("/v1/fraud/score", json=transaction())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert keyed.get("/v1/models").status_code == 401
    wrong = keyed.post("/v1/fraud/score", json=transaction(), headers={"X-API-Key": "x" * 20})
    assert wrong.status_code == 401


def test_a_valid_key_in_either_header_passes(keyed) -> None:
    bearer = keyed.post(
        "/v1/fraud/score", json=transaction(), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert bearer.status_code == 200
    header = keyed.get("/v1/models", headers={"X-API-Key": ADMIN})
    assert header.status_code == 200


def test_probes_and_metrics_stay_open_by_default(keyed, make_client) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert keyed.get(path).status_code == 200, path
    closed = make_client(api_keys=[KEY], auth_probes_and_metrics=True)
    assert closed.get("/metrics").status_code == 401
    assert closed.get("/healthz", headers={"X-API-Key": KEY}).status_code == 200


def test_keys_never_reach_the_logs(keyed, caplog) -> None:
    with caplog.at_level("DEBUG"):
        keyed.post("/v1/fraud/score", json=transaction(), headers={"X-API-Key": KEY})
        keyed.post("/v1/fraud/score", json=transaction(), headers={"X-API-Key": KEY[:-1] + "z"})
    assert KEY not in caplog.text and KEY[:-1] not in caplog.text


def test_each_role_may_do_what_the_ones_before_it_may(keyed) -> None:
    labels = {"labels": [{"transaction_id": 1, "fraud": True}]}
    routes = [
        ("client", lambda key: keyed.post("/v1/fraud/score", json=transaction(), headers=key)),
        ("analyst", lambda key: keyed.post("/v1/fraud/labels", json=labels, headers=key)),
        ("analyst", lambda key: keyed.get("/v1/fraud/customers/17", headers=key)),
        ("admin", lambda key: keyed.post("/v1/models/tiny-fraud/load", headers=key)),
    ]
    for role, key in (("client", KEY), ("analyst", ANALYST), ("admin", ADMIN)):
        for needed, call in routes:
            response = call({"X-API-Key": key})
            allowed = ["client", "analyst", "admin"].index(role) >= [
                "client", "analyst", "admin"
            ].index(needed)  # fmt: skip
            if allowed:
                assert response.status_code in (200, 404), (role, needed, response.text)
            else:
                assert response.status_code == 403, (role, needed)
                assert response.json()["error"]["message"] == (
                    f"this API key's role is {role}; this route needs {needed}"
                )


def test_keys_are_named_after_their_digest_unless_named() -> None:
    named, plain = Settings(_env_file=None, api_keys=[f"{ANALYST}:analyst:alice", KEY]).api_keys
    assert (named.role, named.name) == ("analyst", "alice")
    assert plain.role == "client" and plain.name.startswith("key-") and KEY not in plain.name


@pytest.mark.parametrize(
    "entry", ["short", "k" * 20 + ":root", "k" * 20 + ":admin:bad name", "k" * 20 + ":a:b:c"]
)
def test_malformed_keys_fail_at_start_up(entry: str) -> None:
    with pytest.raises(ValidationError) as failure:
        Settings(_env_file=None, api_keys=[entry])
    assert "api_keys" in str(failure.value)
    assert entry not in str(failure.value)


def test_cors_allows_only_configured_origins(make_client) -> None:
    client = make_client(cors_origins=["https://app.example"])
    allowed = client.options(
        "/v1/fraud/score",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = client.options(
        "/v1/fraud/score",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
