"""Prometheus metrics: requests, latency, queueing, batching, inference and model state.

Each app owns its registry (tests build many apps in one process). Batchers report through
`ModelMetrics`, a `BatchObserver`; model states and queue depths are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.fraud.alerts.records import AlertCounts

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
FILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        r = self.registry
        self._request_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "deepserve_requests",
            "Requests (HTTP, and gRPC calls with the HTTP status they equal) answered, by the "
            "model version that answered.",
            ["route", "model", "version", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "deepserve_request_duration_seconds",
            "Time from request to response.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "deepserve_queue_wait_seconds",
            "Time rows waited in a model's queue before their batch ran.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "deepserve_batch_size",
            "Rows per batch run.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_fill = Histogram(
            "deepserve_batch_fill_ratio",
            "Rows per batch over the model's max batch size.",
            ["model", "version"],
            buckets=FILL_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "deepserve_inference_seconds",
            "ONNX Runtime time per batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "deepserve_rejected_requests",
            "Requests refused with 503 because the queue was full.",
            ["model", "version"],
            registry=r,
        )
        self.expired = Counter(
            "deepserve_expired_requests",
            "Requests whose deadline passed while queued (504).",
            ["model", "version"],
            registry=r,
        )

    def for_model(self, name: str, version: int) -> ModelMetrics:
        return ModelMetrics(self, name, str(version))

    def observe_request(
        self, route: str, model: str, version: str, status: int, seconds: float
    ) -> None:
        key = (route, model, version, status)
        children = self._request_children.get(key)
        if children is None:  # first time for these labels: `labels()` is slow per request
            children = (
                self.requests.labels(route, model, version, str(status)),
                self.request_seconds.labels(route, model),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_history(self, read: Callable[[], tuple[int, int, int | None]]) -> None:
        """Report the fraud history's size, read at scrape time as `(payments kept, bytes
        taken, newest event time in microseconds or None)`."""
        self.registry.register(_HistoryCollector(read))

    def watch_alerts(self, read: Callable[[], AlertCounts]) -> None:
        """Report the alert queue, read at scrape time from the store: the whole queue's
        figures (every replica reports the same ones; aggregate with max, not sum)."""
        self.registry.register(_AlertCollector(read))

    def watch(self, read_models: Callable[[], Iterable[tuple[str, int, str, int]]]) -> None:
        """Report model states and queue depths, read at scrape time from
        `(name, version, state, queued rows)` tuples."""
        self.registry.register(_ModelStateCollector(read_models))


class ModelMetrics:
    """What one model version's batcher reports."""

    def __init__(self, metrics: ServingMetrics, name: str, version: str) -> None:
        self._batch_size = metrics.batch_size.labels(name, version)
        self._batch_fill = metrics.batch_fill.labels(name, version)
        self._inference = metrics.inference_seconds.labels(name, version)
        self._queue_wait = metrics.queue_wait.labels(name, version)
        self._rejected = metrics.rejected.labels(name, version)
        self._expired = metrics.expired.labels(name, version)

    def batch_ran(self, rows: int, max_rows: int, seconds: float, waits: list[float]) -> None:
        self._batch_size.observe(rows)
        self._batch_fill.observe(rows / max_rows)
        self._inference.observe(seconds)
        for wait in waits:
            self._queue_wait.observe(wait)

    def rejected(self) -> None:
        self._rejected.inc()

    def expired(self) -> None:
        self._expired.inc()


class _ModelStateCollector(Collector):
    def __init__(self, read_models: Callable[[], Iterable[tuple[str, int, str, int]]]) -> None:
        self._read = read_models

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "deepserve_model_state",
            "1 for each model version's current state.",
            labels=["model", "version", "state"],
        )
        depth = GaugeMetricFamily(
            "deepserve_queue_rows", "Rows waiting in a model's queue.", labels=["model", "version"]
        )
        for name, version, current, queued in self._read():
            state.add_metric([name, str(version), current], 1.0)
            depth.add_metric([name, str(version)], float(queued))
        yield state
        yield depth


class _HistoryCollector(Collector):
    def __init__(self, read: Callable[[], tuple[int, int, int | None]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        payments, size, newest_us = self._read()
        yield GaugeMetricFamily(
            "deepserve_fraud_history_payments", "Payments kept in the fraud history.", payments
        )
        yield GaugeMetricFamily(
            "deepserve_fraud_history_bytes",
            "Bytes the fraud history takes: on disk (embedded), or Redis's memory.",
            size,
        )
        if newest_us is not None:
            yield GaugeMetricFamily(
                "deepserve_fraud_history_newest_event_seconds",
                "Event time of the newest payment recorded, in seconds since the epoch.",
                newest_us / 1e6,
            )


class _AlertCollector(Collector):
    def __init__(self, read: Callable[[], AlertCounts]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        counts = self._read()
        yield CounterMetricFamily(
            "deepserve_fraud_alerts_opened", "Alerts opened, ever.", counts.opened
        )
        yield GaugeMetricFamily("deepserve_fraud_alerts_open", "Alerts open now.", counts.open)
        resolved = CounterMetricFamily(
            "deepserve_fraud_alerts_resolved", "Alerts resolved, by outcome.", labels=["outcome"]
        )
        resolved.add_metric(["fraud"], counts.resolved_fraud)
        resolved.add_metric(["genuine"], counts.resolved_genuine)
        yield resolved
        yield GaugeMetricFamily("deepserve_fraud_frozen_cards", "Cards frozen now.", counts.frozen)
        resolved_total = counts.resolved_fraud + counts.resolved_genuine
        if resolved_total:
            yield GaugeMetricFamily(
                "deepserve_fraud_alerts_precision",
                "Share of resolved alerts resolved as fraud: how often an alert was right.",
                counts.resolved_fraud / resolved_total,
            )
