"""The analyst's loop on the real app (lifespan, real history file or real Redis), with a
logistic model and its reasons graph: flagged payments open alerts, analysts work the
queue, resolve alerts, and frozen cards are declined with `card_frozen`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests import model_factory
from tests.api.test_fraud import payment
from tests.conftest import ClientFactory
from tests.server import running_server

ANALYST = "analyst-key-0123456789"
CLIENT = "client-key-0123456789"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "explained"
    model_factory.fraud_model(root, reasons=True)
    return root


@pytest.fixture(params=["embedded", "redis"])
def analysts(request: pytest.FixtureRequest, make_client: ClientFactory, repo: Path) -> TestClient:
    """The app with an analyst key and a client key, on each store."""
    keys = [CLIENT, f"{ANALYST}:analyst:alice"]
    if request.param == "redis":
        return make_client(repo, api_keys=keys, fraud_store=request.getfixturevalue("redis_url"))
    return make_client(repo, api_keys=keys)


AS_ANALYST = {"Authorization": f"Bearer {ANALYST}"}
AS_CLIENT = {"Authorization": f"Bearer {CLIENT}"}


def send(client: TestClient, *payments: dict[str, Any], query: str = "") -> list[dict[str, Any]]:
    answer = client.post(
        f"/v1/fraud/transactions{query}", json={"transactions": list(payments)}, headers=AS_CLIENT
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def queue(client: TestClient, query: str = "") -> dict[str, Any]:
    answer = client.get(f"/v1/fraud/alerts{query}", headers=AS_ANALYST)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_flagged_payments_open_one_alert_per_card_with_their_reasons(
    analysts: TestClient,
) -> None:
    results = send(
        analysts,
        payment(1, amount=300.0),  # review (0.88)
        payment(2, amount=20.0, timestamp="2018-09-12T15:00:00"),  # approve
        payment(3, amount=500.0, timestamp="2018-09-12T16:00:00"),  # decline
        payment(4, customer_id=18, amount=260.0),
        query="?reasons=never",  # the client wants none; the alert keeps them all the same
    )
    assert [r["decision"] for r in results] == ["review", "approve", "decline", "review"]
    assert all("reasons" not in r for r in results)
    alerts = queue(analysts)["alerts"]
    assert [(a["customer_id"], a["payments"]) for a in alerts] == [(17, 2), (18, 1)]
    assert alerts[0]["score"] == pytest.approx(results[2]["fraud_probability"])
    alert = analysts.get(f"/v1/fraud/alerts/{alerts[0]['id']}", headers=AS_ANALYST).json()
    assert [t["transaction_id"] for t in alert["transactions"]] == [1, 3]
    assert alert["transactions"][1]["reasons"][0]["code"] == "amount"
    assert alert["transactions"][1]["timestamp"].startswith("2018-09-12T16:00:00")
    assert [t["transaction_id"] for t in alert["history"]["transactions"]] == [3, 2, 1]
    assert [e["event"] for e in alert["trail"]] == ["opened", "flagged"]
    assert alert["status"] == "open" and alert["resolution"] is None and alert["frozen"] is None
    send(analysts, payment(3, amount=500.0, timestamp="2018-09-12T16:00:00"))  # a retry
    assert queue(analysts)["alerts"][0]["payments"] == 2


def test_resolving_as_fraud_labels_freezes_and_declines_the_cards_next_payments(
    analysts: TestClient,
) -> None:
    send(analysts, payment(1, amount=300.0), payment(2, amount=40.0))
    (alert,) = queue(analysts)["alerts"]
    resolved = analysts.post(
        f"/v1/fraud/alerts/{alert['id']}/resolve",
        json={"outcome": "fraud", "note": "holder denies it"},
        headers=AS_ANALYST,
    )
    assert resolved.status_code == 200, resolved.text
    document = resolved.json()
    assert document["status"] == "resolved"
    assert document["resolution"]["by"] == "alice"  # the key's name, never the key
    assert ANALYST not in resolved.text
    assert document["resolution"]["note"] == "holder denies it"
    assert document["frozen"]["alert_id"] == alert["id"]
    labels = {t["transaction_id"]: t["fraud"] for t in document["history"]["transactions"]}
    assert labels == {1: True, 2: None}  # only the alert's payments
    (later,) = send(analysts, payment(5, amount=10.0, timestamp="2018-09-13T10:00:00"))
    assert later["decision"] == "decline" and later["fraud_probability"] < 0.5
    assert later["reasons"][0]["code"] == "card_frozen"
    assert "card 17 is frozen" in later["reasons"][0]["text"]
    assert queue(analysts)["alerts"] == []  # a frozen card's declines raise no alert
    frozen = analysts.get("/v1/fraud/frozen", headers=AS_ANALYST).json()["frozen"]
    assert [(f["customer_id"], f["by"]) for f in frozen] == [(17, "alice")]
    card = analysts.get("/v1/fraud/customers/17", headers=AS_ANALYST).json()
    assert card["frozen"]["note"] == "holder denies it"

    again = analysts.post(
        f"/v1/fraud/alerts/{alert['id']}/resolve", json={"outcome": "genuine"}, headers=AS_ANALYST
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "alert_resolved"

    lifted = analysts.post("/v1/fraud/customers/17/unfreeze", headers=AS_ANALYST)
    assert lifted.status_code == 200 and lifted.json()["lifted"]["alert_id"] == alert["id"]
    (after,) = send(analysts, payment(6, amount=10.0, timestamp="2018-09-13T11:00:00"))
    assert after["decision"] == "approve"
    twice = analysts.post("/v1/fraud/customers/17/unfreeze", headers=AS_ANALYST)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "freeze_conflict"
    resolved_page = queue(analysts, "?status=resolved")["alerts"]
    assert [a["resolution"]["outcome"] for a in resolved_page] == ["fraud"]


def test_what_if_scores_without_recording_or_alerting(analysts: TestClient) -> None:
    send(analysts, payment(1, amount=40.0))
    (what_if,) = send(analysts, payment(2, amount=300.0), query="?record=false&include=features")
    assert what_if["decision"] == "review" and what_if["features"]["customer_nb_tx_1d"] == 2
    assert what_if["reasons"][0]["code"] == "amount"
    assert queue(analysts)["alerts"] == []
    card = analysts.get("/v1/fraud/customers/17", headers=AS_ANALYST).json()
    assert [t["transaction_id"] for t in card["transactions"]] == [1]
    (recorded,) = send(analysts, payment(2, amount=300.0), query="?include=features")
    assert recorded["features"] == what_if["features"]
    assert len(queue(analysts)["alerts"]) == 1


def test_the_queue_pages_with_a_cursor(analysts: TestClient) -> None:
    send(analysts, *(payment(i, customer_id=100 + i, amount=250.0 + i) for i in range(7)))
    seen, cursor = [], None
    while True:
        page = queue(analysts, "?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += page["alerts"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [a["customer_id"] for a in seen] == [106, 105, 104, 103, 102, 101, 100]


def test_two_analysts_resolving_at_once_one_gets_409(analysts: TestClient) -> None:
    send(analysts, payment(1, amount=300.0))
    (alert,) = queue(analysts)["alerts"]
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def resolve(outcome: str) -> None:
        barrier.wait()
        answer = analysts.post(
            f"/v1/fraud/alerts/{alert['id']}/resolve", json={"outcome": outcome}, headers=AS_ANALYST
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=resolve, args=(o,)) for o in ("fraud", "genuine")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]


def test_bad_requests_get_clear_errors(analysts: TestClient) -> None:
    send(analysts, payment(1, amount=300.0))
    (alert,) = queue(analysts)["alerts"]
    path = f"/v1/fraud/alerts/{alert['id']}/resolve"
    for body, field in [
        ({"outcome": "maybe"}, "outcome"),
        ({"note": "no outcome"}, "outcome"),
        ({"outcome": "fraud", "note": "x" * 2001}, "note"),
        ({"outcome": "fraud", "extra": 1}, "extra"),
    ]:
        answer = analysts.post(path, json=body, headers=AS_ANALYST)
        assert answer.status_code == 422, answer.text
        assert [d["field"] for d in answer.json()["error"]["details"]] == [field]
    assert analysts.post(path, content=b"{", headers=AS_ANALYST).status_code == 400
    assert analysts.post(path, headers=AS_ANALYST).status_code == 422
    for missing in ("/v1/fraud/alerts/999", "/v1/fraud/alerts/abc", "/v1/fraud/alerts/-1"):
        answer = analysts.get(missing, headers=AS_ANALYST)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "alert_not_found"
    unknown = analysts.post(
        "/v1/fraud/alerts/999/resolve", json={"outcome": "fraud"}, headers=AS_ANALYST
    )
    assert unknown.status_code == 404
    for route in ("freeze", "unfreeze"):
        answer = analysts.post(f"/v1/fraud/customers/999/{route}", headers=AS_ANALYST)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_in_history"
    for cursor in ("nonsense", "0.5_99999999999999999999", "0.5_0", "2.0_3"):
        bad_cursor = analysts.get(f"/v1/fraud/alerts?cursor={cursor}", headers=AS_ANALYST)
        assert bad_cursor.status_code == 422, cursor
        assert bad_cursor.json()["error"]["details"][0]["field"] == "query.cursor"
    for card in ("-9999999999999999999", "99999999999999999999999"):
        for route in ("freeze", "unfreeze"):
            answer = analysts.post(f"/v1/fraud/customers/{card}/{route}", headers=AS_ANALYST)
            assert answer.status_code == 404, (card, route, answer.text)
    # A client key scores and records, and may not work alerts: 403; no key at all, 401.
    assert analysts.post(path, json={"outcome": "fraud"}, headers=AS_CLIENT).status_code == 403
    assert analysts.get("/v1/fraud/alerts", headers=AS_CLIENT).status_code == 403
    assert analysts.post("/v1/fraud/customers/17/unfreeze", headers=AS_CLIENT).status_code == 403
    assert analysts.get("/v1/fraud/frozen").status_code == 401
    assert queue(analysts)["alerts"][0]["status"] == "open"  # none of it changed anything


def test_a_card_named_by_digits_past_64_bits_is_a_string_card(analysts: TestClient) -> None:
    big = "99999999999999999999999"
    send(analysts, payment(1, customer_id=big, amount=300.0))
    (alert,) = queue(analysts)["alerts"]
    assert alert["customer_id"] == big
    shown = analysts.get(f"/v1/fraud/alerts/{alert['id']}", headers=AS_ANALYST).json()
    assert shown["history"]["id"] == big
    path = f"/v1/fraud/alerts/{alert['id']}/resolve"
    resolved = analysts.post(path, json={"outcome": "fraud"}, headers=AS_ANALYST)
    assert resolved.status_code == 200 and resolved.json()["frozen"]["customer_id"] == big
    assert (
        analysts.post(f"/v1/fraud/customers/{big}/unfreeze", headers=AS_ANALYST).status_code == 200
    )


def test_a_frozen_cards_decline_says_why_even_without_reasons(analysts: TestClient) -> None:
    send(analysts, payment(1, amount=20.0))
    analysts.post("/v1/fraud/customers/17/freeze", headers=AS_ANALYST)
    (later,) = send(analysts, payment(2, amount=20.0), query="?reasons=never")
    assert later["decision"] == "decline"
    assert [r["code"] for r in later["reasons"]] == ["card_frozen"]


def test_a_card_frozen_by_hand_is_declined_and_listed(analysts: TestClient) -> None:
    send(analysts, payment(1, amount=20.0))
    frozen = analysts.post(
        "/v1/fraud/customers/17/freeze", json={"note": "reported stolen"}, headers=AS_ANALYST
    )
    assert frozen.status_code == 200 and frozen.json()["alert_id"] is None
    again = analysts.post("/v1/fraud/customers/17/freeze", headers=AS_ANALYST)
    assert again.status_code == 409
    (later,) = send(analysts, payment(2, amount=20.0, timestamp="2018-09-12T15:00:00"))
    assert later["decision"] == "decline" and later["reasons"][0]["code"] == "card_frozen"


def test_alert_metrics_follow_the_queue(analysts: TestClient) -> None:
    send(analysts, payment(1, amount=300.0), payment(2, customer_id=18, amount=300.0))
    alerts = queue(analysts)["alerts"]
    for alert, outcome in zip(alerts, ("fraud", "genuine"), strict=True):
        analysts.post(
            f"/v1/fraud/alerts/{alert['id']}/resolve", json={"outcome": outcome}, headers=AS_ANALYST
        )
    send(analysts, payment(3, customer_id=19, amount=300.0))
    analysts.get("/readyz")  # the store's counts are read at each check, every second
    values = _metrics(analysts)
    assert values["deepserve_fraud_alerts_opened_total"] >= 2  # Redis: as last read
    assert values["deepserve_fraud_alerts_resolved_total"] == {"fraud": 1.0, "genuine": 1.0}
    assert values["deepserve_fraud_frozen_cards"] == 1
    assert values["deepserve_fraud_alerts_precision"] == 0.5


def _metrics(client: TestClient) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "deepserve_fraud_alerts_resolved_total":
                found.setdefault(sample.name, {})[sample.labels["outcome"]] = sample.value
            elif sample.name.startswith("deepserve_fraud_"):
                found[sample.name] = sample.value
    return found


def test_the_loop_over_real_http(repo: Path) -> None:
    """The same loop through `python -m app` and real HTTP, across a restart: the alert,
    its resolution and the freeze are still there."""
    state = repo.parent / "state"
    settings = {"model_repository": str(repo), "default_fraud_model": "tiny-fraud"}
    settings |= {"state_dir": str(state), "log_level": "warning", "grpc_port": "0"}
    with running_server(**settings) as base:
        httpx.post(f"{base}/v1/fraud/transactions", json=payment(1, amount=300.0))
        (alert,) = httpx.get(f"{base}/v1/fraud/alerts").json()["alerts"]
        path = f"{base}/v1/fraud/alerts/{alert['id']}/resolve"
        assert httpx.post(path, json={"outcome": "fraud"}).status_code == 200
    with running_server(**settings) as base:
        kept = httpx.get(f"{base}/v1/fraud/alerts/{alert['id']}").json()
        assert kept["resolution"]["outcome"] == "fraud" and kept["frozen"] is not None
        later = httpx.post(
            f"{base}/v1/fraud/transactions", json=payment(2, timestamp="2018-09-12T15:00:00")
        ).json()["results"][0]
        assert later["reasons"][0]["code"] == "card_frozen"
