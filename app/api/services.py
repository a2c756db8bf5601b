"""The objects a request may need, built once by the app factory and typed."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from app.api.draining import Drain
from app.api.refusals import RefusalPacer
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.store import HistoryStore
from app.serving.data_plane import DataPlane
from app.serving.metrics import ServingMetrics
from app.serving.registry import ModelRegistry
from app.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    metrics: ServingMetrics
    registry: ModelRegistry
    data_plane: DataPlane
    drain: Drain
    refusals: RefusalPacer
    history: HistoryStore

    @classmethod
    def build(cls, settings: Settings) -> Services:
        metrics = ServingMetrics()
        registry = ModelRegistry(settings.registry_config(), metrics)
        metrics.watch(registry.snapshot)
        history = history_store(settings)
        metrics.watch_history(history.size)
        metrics.watch_alerts(history.alerts.counts)
        return cls(
            settings=settings,
            metrics=metrics,
            registry=registry,
            history=history,
            data_plane=DataPlane(registry, settings.decode_config(), history),
            drain=Drain(),
            refusals=RefusalPacer(settings.prompt_refusals_per_s, settings.refusal_pause_ms / 1000),
        )


def history_store(settings: Settings) -> HistoryStore:
    if settings.fraud_store:
        return RedisHistory(settings.fraud_store, settings.fraud_retention_days)
    return EmbeddedHistory(settings.state_dir / "fraud-history.db", settings.fraud_retention_days)


def services_of(app: Starlette) -> Services:
    """The app's services (set by `create_app`), typed."""
    services = app.state.services
    if not isinstance(services, Services):
        raise TypeError("the app was not built by app.main.create_app")
    return services
