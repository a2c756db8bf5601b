"""GET /metrics: Prometheus text with request, batching, model-state and process metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import encoded_image, transaction


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_requests_batches_and_states_are_counted(client) -> None:
    for i in range(3):
        client.post("/v1/fraud/score", json=transaction(transaction_id=i))
    client.post("/v1/fraud/score", json={"transactions": [transaction()] * 5})
    client.post(
        "/v1/classify", content=encoded_image((200, 0, 0)), headers={"content-type": "image/png"}
    )
    client.post("/v1/fraud/score", json=transaction(amount=-1))
    values = samples(client)
    fraud = (("model", "tiny-fraud"), ("version", "1"))
    ok = (
        ("model", "tiny-fraud"),
        ("route", "/v1/fraud/score"),
        ("status", "200"),
        ("version", "1"),
    )
    assert values[("deepserve_requests_total", ok)] == 4
    bad = (
        ("model", "tiny-fraud"),
        ("route", "/v1/fraud/score"),
        ("status", "422"),
        ("version", "1"),
    )
    assert values[("deepserve_requests_total", bad)] == 1
    assert values[("deepserve_batch_size_count", fraud)] == 4
    assert values[("deepserve_batch_size_sum", fraud)] == 8  # rows: 3 single + one of 5
    assert values[("deepserve_inference_seconds_count", fraud)] == 4
    assert values[("deepserve_queue_wait_seconds_count", fraud)] == 4
    ready = (("model", "tiny-fraud"), ("state", "ready"), ("version", "1"))
    assert values[("deepserve_model_state", ready)] == 1
    assert values[("deepserve_queue_rows", fraud)] == 0
    assert values[("process_resident_memory_bytes", ())] > 10_000_000
    image = (("model", "tiny-image"), ("version", "1"))
    assert values[("deepserve_batch_fill_ratio_count", image)] == 1


def test_opentelemetry_spans_only_when_switched_on(make_client) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # global, as an OpenTelemetry SDK set-up would make it

    off = make_client()
    assert off.post("/v1/fraud/score", json=transaction()).status_code == 200
    assert exporter.get_finished_spans() == ()

    on = make_client(opentelemetry=True)
    assert on.post("/v1/fraud/score", json=transaction()).status_code == 200
    spans = [
        span
        for span in exporter.get_finished_spans()
        if (span.attributes or {}).get("url.path") == "/v1/fraud/score"
    ]
    assert len(spans) == 1
    assert spans[0].attributes["http.response.status_code"] == 200
