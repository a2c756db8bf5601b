"""The model registry: which versions exist, their load state, and lookup for requests.

Loading runs in the background after start-up, one version at a time, off the event loop;
`/readyz` reports ready once every version has loaded and warmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from app.errors import ModelNotFound, ModelNotReady, WrongModelKind
from app.metrics import ServingMetrics
from app.model_card import ModelCard
from app.providers import ProviderChoice, choose_providers
from app.repository import InvalidModelCard, VersionDir, discover, read_card
from app.runtime import ModelLoadError, ModelRuntime
from app.settings import Settings

logger = logging.getLogger(__name__)

Kind = Literal["image_classifier", "tabular_classifier"]


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ModelVersion:
    name: str
    version: int
    state: ModelState
    reason: str | None = None
    card: ModelCard | None = None
    runtime: ModelRuntime | None = None


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: ServingMetrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._missing: list[str] = []
        self._loaded = asyncio.Event()
        self.providers: ProviderChoice | None = None

    async def load_all(self) -> None:
        """Discover the repository and load every version found (or configured)."""
        try:
            self.providers = choose_providers(self._settings)
            logger.info("execution providers %s (%s)", self.providers.names, self.providers.reason)
            found = discover(self._settings.model_repository, self._settings.models or None)
            for name, versions in found.items():
                if not versions:
                    self._missing.append(name)
                    logger.error(
                        "model %s: no versions in %s", name, self._settings.model_repository / name
                    )
                self._models[name] = {
                    v.version: ModelVersion(name, v.version, ModelState.LOADING) for v in versions
                }
            for versions in found.values():
                for version_dir in versions:
                    await self._load(version_dir)
        finally:
            self._loaded.set()

    async def _load(self, version_dir: VersionDir) -> None:
        entry = self._models[version_dir.name][version_dir.version]
        assert self.providers is not None
        started = time.perf_counter()
        try:
            card = read_card(version_dir)
            entry.card = card
            observer = self._metrics.for_model(card.name, card.version) if self._metrics else None
            runtime = await asyncio.to_thread(
                ModelRuntime.load,
                card,
                version_dir.onnx_path,
                self._settings,
                self.providers,
                observer,
            )
            warm_s = await asyncio.to_thread(runtime.warm_up)
        except (InvalidModelCard, ModelLoadError) as exc:
            entry.state, entry.reason = ModelState.FAILED, str(exc)
            logger.error("model %s/%s failed to load: %s", entry.name, entry.version, exc)
            return
        runtime.batcher.start()
        entry.runtime, entry.state = runtime, ModelState.READY
        logger.info(
            "model %s/%s ready on %s in %.2fs (warm-up %.2fs, max batch %d, delay %gms)",
            entry.name,
            entry.version,
            runtime.providers[0],
            time.perf_counter() - started,
            warm_s,
            runtime.max_batch_size,
            runtime.max_queue_delay_ms,
        )

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    def resolve(
        self, name: str, version: int | None = None, kind: Kind | None = None
    ) -> ModelRuntime:
        """The runtime that serves a request; the highest ready version unless one is named."""
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r}")
        if version is None:
            ready = [v for v in versions.values() if v.state is ModelState.READY]
            if not ready:
                states = ", ".join(f"{v.version}: {v.state}" for v in versions.values())
                raise ModelNotReady(f"model {name!r} has no ready version ({states})")
            entry = max(ready, key=lambda v: v.version)
        else:
            if version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version}")
            entry = versions[version]
            if entry.state is not ModelState.READY:
                raise ModelNotReady(
                    f"model {name!r} version {version} is {entry.state}"
                    + (f": {entry.reason}" if entry.reason else "")
                )
        assert entry.runtime is not None
        if kind is not None and entry.runtime.card.kind != kind:
            raise WrongModelKind(f"model {name!r} is a {entry.runtime.card.kind}, not a {kind}")
        return entry.runtime

    def not_ready(self) -> list[str]:
        """Configured models or versions that are not ready, with the reason."""
        if not self._loaded.is_set() and not self._models:
            return ["the model repository is still being read"]
        problems = [f"{name}: no versions found" for name in self._missing]
        for versions in self._models.values():
            for v in versions.values():
                if v.state is not ModelState.READY:
                    problems.append(
                        f"{v.name}/{v.version}: {v.state}" + (f" ({v.reason})" if v.reason else "")
                    )
        return problems

    def snapshot(self) -> list[tuple[str, int, str, int]]:
        """(name, version, state, queued rows) of every version, for metrics."""
        return [
            (v.name, v.version, str(v.state), v.runtime.batcher.queued_rows if v.runtime else 0)
            for versions in self._models.values()
            for v in versions.values()
        ]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelVersion]:
        if name not in self._models:
            raise ModelNotFound(f"no model named {name!r}")
        return [self._models[name][v] for v in sorted(self._models[name])]

    async def close(self, timeout_s: float = 10.0) -> None:
        """Answer what is queued, then release every session."""
        runtimes = [
            v.runtime
            for versions in self._models.values()
            for v in versions.values()
            if v.runtime is not None
        ]
        await asyncio.gather(*(r.batcher.close(timeout_s) for r in runtimes))
