"""Reasons on the fraud routes, on the real app with a logistic model and its reasons graph,
whose attributions are known exactly: coefficient times (value - baseline). Both kinds of
reasons graph: one that gives the probability too (the published versions from 7 on), and
one that gives only the attributions (earlier ones)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.services import services_of
from tests import model_factory
from tests.api.test_fraud import payment
from tests.conftest import ClientFactory, transaction


@pytest.fixture(params=[True, False], ids=["graph-gives-scores", "graph-gives-reasons-only"])
def explained(make_client: ClientFactory, tmp_path: Path, request) -> TestClient:
    root = tmp_path / "explained"
    model_factory.fraud_model(root, reasons=True, reasons_score=request.param)
    return make_client(root)


def scored(client: TestClient, query: str = "") -> list[dict]:
    body = {
        "transactions": [
            transaction(transaction_id="big", amount=300.0, terminal_risk_7d=0.25),
            transaction(transaction_id="small", amount=20.0),
        ]
    }
    answer = client.post(f"/v1/fraud/score{query}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def test_flagged_scores_come_with_their_reasons_in_words(explained: TestClient) -> None:
    big, small = scored(explained)
    assert big["decision"] == "decline" and small["decision"] == "approve"
    assert "reasons" not in small  # approved: no reasons by default
    # Only what pushed the score up, largest first: the amount (0.02 x (300 - 50)), then the
    # terminal's risk (3 x (0.25 - 0.02)); daytime (night 0 against 0.15) pulled it down.
    assert big["reasons"] == [
        {
            "code": "amount",
            "feature": "amount",
            "value": 300.0,
            "contribution": pytest.approx(5.0, abs=1e-4),
            "text": "amount 300.00 is 5.9 times this card's 30-day average of 51.20",
        },
        {
            "code": "terminal_risk_7d",
            "feature": "terminal_risk_7d",
            "value": 0.25,
            "contribution": pytest.approx(0.69, abs=1e-4),
            "text": "this terminal: 10 of its 40 transactions in the known week before were fraud",
        },
    ]


def test_reasons_can_be_asked_for_always_or_never(explained: TestClient) -> None:
    big, small = scored(explained, "?reasons=always")
    assert small["reasons"] == []  # nothing pushed it up
    assert [r["code"] for r in big["reasons"]] == ["amount", "terminal_risk_7d"]
    assert all("reasons" not in r for r in scored(explained, "?reasons=never"))
    wrong = explained.post("/v1/fraud/score?reasons=sometimes", json=transaction())
    assert wrong.status_code == 422


def test_reasons_for_every_row_take_one_graph_run_where_it_gives_the_scores(
    explained: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = services_of(explained.app).registry.resolve("tiny-fraud")
    assert runtime.explainer is not None and runtime.model_card.reasons is not None
    gives_scores = runtime.model_card.reasons.score_output is not None
    model_runs: list[int] = []
    run = runtime.session.run

    def counted(*args, **kwargs):  # the real session, counted
        model_runs.append(len(args[1]["features"]))
        return run(*args, **kwargs)

    monkeypatch.setattr(runtime.session, "run", counted)
    batches = len(runtime.explainer.stats.sizes)
    always = scored(explained, "?reasons=always")
    assert list(runtime.explainer.stats.sizes)[batches:] == [2]  # both rows, one batch
    assert model_runs == ([] if gives_scores else [2])  # else the model first, in that batch
    before = len(model_runs)
    flagged = scored(explained)  # the default: the model for all, the graph for the flagged
    assert list(runtime.explainer.stats.sizes)[-1] == 1
    assert model_runs[before:] == ([2] if gives_scores else [2, 1])
    assert [(r["fraud_probability"], r["decision"]) for r in always] == [
        (r["fraud_probability"], r["decision"]) for r in flagged
    ]
    assert always[0]["reasons"] == flagged[0]["reasons"]


def test_recorded_payments_get_reasons_about_their_card(explained: TestClient) -> None:
    explained.post("/v1/fraud/transactions", json=payment(1, amount=20.0))
    night = payment(2, amount=300.0, timestamp="2018-09-13T02:00:00")
    first = explained.post("/v1/fraud/transactions", json=night)
    (result,) = first.json()["results"]
    assert result["decision"] == "decline"
    assert [(r["code"], r["text"]) for r in result["reasons"]] == [
        ("amount", "amount 300.00 is 1.9 times card 17's 30-day average of 160.00"),
        ("night", "night-time payment (00:00 to 06:59)"),
    ]
    again = explained.post("/v1/fraud/transactions", json=night)
    assert again.json()["results"] == first.json()["results"]  # a retry: the same words


def test_recorded_payments_get_reasons_for_all_when_asked_and_a_retry_its_first_ones(
    explained: TestClient,
) -> None:
    """In one batch, a payment sent again (answered as the first time, its reasons about
    the features it had then) and a new one: reasons for both with `always`."""
    explained.post("/v1/fraud/transactions", json=payment(1, amount=20.0))
    first = explained.post("/v1/fraud/transactions?reasons=always", json=payment(2, amount=30.0))
    (earlier,) = first.json()["results"]
    assert earlier["decision"] == "approve" and earlier["reasons"] == []  # nothing pushed it up
    night = payment(3, amount=300.0, timestamp="2018-09-13T02:00:00")
    batch = {"transactions": [payment(2, amount=30.0), night]}
    answer = explained.post("/v1/fraud/transactions?reasons=always", json=batch)
    assert answer.status_code == 200, answer.text
    again, new = answer.json()["results"]
    assert again == earlier
    assert [r["code"] for r in new["reasons"]] == ["amount", "night"]


def test_a_model_without_a_reasons_graph_gives_none(client: TestClient) -> None:
    answer = client.post("/v1/fraud/score?reasons=always", json=transaction(amount=300.0))
    assert answer.status_code == 200
    assert "reasons" not in answer.json()["results"][0]


def test_a_score_whose_reasons_cannot_be_had_is_answered_without_them(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    root = tmp_path / "fragile"
    folder = model_factory.fraud_model(root, reasons=True)
    model_factory.look_amounts_up(folder / "reasons.onnx", table_size=1000)
    client = make_client(root)
    body = {"transactions": [transaction(amount=1500.0), transaction(transaction_id="b")]}
    answer = client.post("/v1/fraud/score?reasons=always", json=body)
    assert answer.status_code == 200, answer.text
    assert [r["reasons"] for r in answer.json()["results"]] == [None, None]  # one graph run
    alone = client.post("/v1/fraud/score?reasons=always", json=transaction(amount=300.0))
    assert alone.json()["results"][0]["reasons"][0]["code"] == "amount"  # the graph still runs
    recorded = client.post("/v1/fraud/transactions", json=payment(1, amount=1500.0))
    assert recorded.status_code == 200, recorded.text
    (result,) = recorded.json()["results"]
    assert result["decision"] == "decline" and result["reasons"] is None
    assert client.get("/v1/fraud/customers/17").json()["transactions"][0]["transaction_id"] == 1


def test_a_payment_whose_reasons_graph_fails_is_recorded_once_and_scored_by_the_model(
    make_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With reasons for every row, the reasons graph scores too: where it fails, the model
    scores the payment, recorded once, and the graph is not tried again for it."""
    root = tmp_path / "fragile"
    folder = model_factory.fraud_model(root, reasons=True)
    model_factory.look_amounts_up(folder / "reasons.onnx", table_size=1000)
    client = make_client(root)
    runtime = services_of(client.app).registry.resolve("tiny-fraud")
    graph = runtime._reasons_session
    assert graph is not None
    graph_runs: list[int] = []
    run = graph.run

    def counted(*args, **kwargs):  # the real session, counted
        graph_runs.append(len(args[1]["features"]))
        return run(*args, **kwargs)

    monkeypatch.setattr(graph, "run", counted)
    answer = client.post("/v1/fraud/transactions?reasons=always", json=payment(1, amount=1500.0))
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["results"]
    assert result["decision"] == "decline" and result["reasons"] is None
    assert result["fraud_probability"] == pytest.approx(model_factory.fraud_probability(1500.0))
    assert graph_runs == [1]
    history = client.get("/v1/fraud/customers/17").json()["transactions"]
    assert [t["transaction_id"] for t in history] == [1]
    fine = client.post("/v1/fraud/transactions?reasons=always", json=payment(2, amount=300.0))
    assert fine.json()["results"][0]["reasons"][0]["code"] == "amount"
    assert graph_runs == [1, 1]  # one run gave the score and the reasons


@pytest.mark.parametrize("fault", ["not a graph", "fails whenever it runs"])
def test_a_broken_reasons_graph_leaves_the_model_serving(
    make_client: ClientFactory, tmp_path: Path, fault: str
) -> None:
    root = tmp_path / "broken"
    folder = model_factory.fraud_model(root, reasons=True)
    if fault == "not a graph":
        (folder / "reasons.onnx").write_bytes(b"not onnx")
    else:  # a lookup in an empty table: ONNX Runtime raises at warm-up
        model_factory.look_amounts_up(folder / "reasons.onnx", table_size=0)
    client = make_client(root)
    assert client.get("/readyz").status_code == 200
    answer = client.post("/v1/fraud/score?reasons=always", json=transaction(amount=300.0))
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    assert result["decision"] == "review" and "reasons" not in result
