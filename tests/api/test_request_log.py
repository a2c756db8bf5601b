"""One JSON log line per request, with its id."""

from __future__ import annotations

import json

from tests.conftest import transaction


def test_every_request_gets_an_id_and_one_json_log_line(client, caplog) -> None:
    with caplog.at_level("INFO", logger="deepserve.requests"):
        mine = client.post("/v1/fraud/score", json=transaction(), headers={"X-Request-ID": "abc-1"})
        made = client.post("/v1/models/nope/score", json=transaction())
    assert mine.headers["x-request-id"] == "abc-1"
    assert len(made.headers["x-request-id"]) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "deepserve.requests"]
    assert lines[0] == {
        **lines[0],
        "request_id": "abc-1",
        "route": "/v1/fraud/score",
        "status": 200,
        "model": "tiny-fraud",
        "version": 1,
        "items": 1,
    }
    assert lines[0]["latency_ms"] > 0
    assert lines[1]["status"] == 404 and lines[1]["route"] == "/v1/models/{model}/score"
