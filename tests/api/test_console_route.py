"""The console's routes on the real app: the page and its assets with their headers, the
setting that turns it off, and `GET /v1/key`, which tells the page the key's role."""

from __future__ import annotations

from tests.conftest import ClientFactory

KEY = "console-route-key-0123"


def test_the_console_is_served_at_the_root_with_its_policy(make_client: ClientFactory) -> None:
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/js/main.js">' in page.text
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    script = client.get("/console/js/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    assert client.get("/console/nothing.js").status_code == 404


def test_a_setting_turns_the_console_off(make_client: ClientFactory) -> None:
    client = make_client(console=False)
    assert client.get("/").status_code == 404
    assert client.get("/console/js/main.js").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_the_key_route_says_the_role(make_client: ClientFactory) -> None:
    open_service = make_client()
    assert open_service.get("/v1/key").json() == {
        "keys_required": False, "role": "admin", "name": None
    }  # fmt: skip
    keyed = make_client(api_keys=[f"{KEY}:analyst:alice"])
    assert keyed.get("/v1/key").status_code == 401
    answer = keyed.get("/v1/key", headers={"X-API-Key": KEY}).json()
    assert answer == {"keys_required": True, "role": "analyst", "name": "alice"}
