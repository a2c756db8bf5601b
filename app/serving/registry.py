"""The model registry: which versions exist, their load state, and lookup for requests.

Loading runs in the background after start-up, one version at a time, off the event loop;
`/readyz` reports ready once every version has loaded and warmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from app.codecs.transactions import needs_history
from app.errors import ModelNotFound, ModelNotReady, WrongModelKind
from app.model_card import ModelCard
from app.serving.config import RegistryConfig
from app.serving.metrics import ServingMetrics
from app.serving.providers import ProviderChoice, choose_providers
from app.serving.repository import InvalidModelCard, VersionDir, discover, read_card
from app.serving.runtime import REASONS_SUFFIX, ModelLoadError, ModelRuntime

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
    model_card: ModelCard | None = None
    runtime: ModelRuntime | None = None
    # For a failed version: its files as they were; changed files are loaded again.
    files_seen: tuple[tuple[int, int], ...] | None = None
    # Whether its card reads features only the history computes: asked on every request
    # of the routes that take the client's own inputs, so worked out once per card.
    needs_history: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.read(self.model_card)

    def read(self, card: ModelCard | None) -> None:
        """Take the version's card (None: unreadable)."""
        self.model_card = card
        self.needs_history = card is not None and needs_history(card)


def _card_or_none(version_dir: VersionDir) -> ModelCard | None:
    try:
        return read_card(version_dir)
    except InvalidModelCard:
        return None  # `_load` fails it, and says why


def _without_history(name: str, versions: Iterable[ModelVersion]) -> list[ModelVersion]:
    """The ready versions that need no feature only the history computes: what routes that
    take the client's own inputs serve. Where the model has such versions but none is ready
    (loading, or failed), ModelNotReady (503), rather than a version those routes cannot
    feed; [] where it has none (those routes then say why they cannot use the others)."""
    sent = [v for v in versions if v.model_card is not None and not v.needs_history]
    ready = [v for v in sent if v.state is ModelState.READY]
    if sent and not ready:
        states = ", ".join(
            f"{v.version}: {v.state}" + (f" ({v.reason})" if v.reason else "") for v in sent
        )
        raise ModelNotReady(
            f"model {name!r} has no ready version that takes the client's own inputs ({states})"
        )
    return ready


def _files_now(version_dir: VersionDir) -> tuple[tuple[int, int], ...]:
    """(modification time, size) of a version's card and graph; (0, 0) where absent."""
    seen = []
    for path in (version_dir.card_path, version_dir.onnx_path):
        try:
            stat = path.stat()
        except OSError:
            seen.append((0, 0))
        else:
            seen.append((stat.st_mtime_ns, stat.st_size))
    return tuple(seen)


class ModelRegistry:
    def __init__(self, config: RegistryConfig, metrics: ServingMetrics | None = None) -> None:
        self._config = config
        self._metrics = metrics
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._missing: list[str] = []
        # Unloaded on request, or retired by `keep_versions`: not loaded again at each look.
        self._unloaded: set[tuple[str, int]] = set()
        self._loaded = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self.providers: ProviderChoice | None = None

    async def load_all(self) -> None:
        """Choose providers, then load every version found (or configured)."""
        try:
            self.providers = choose_providers(self._config.device)
            logger.info("execution providers %s (%s)", self.providers.names, self.providers.reason)
            await self.sync()
        finally:
            self._loaded.set()

    async def sync(self, names: list[str] | None = None) -> None:
        """Bring the registry in line with the repository: load versions that appeared,
        unload those that disappeared, then keep only the newest `keep_versions` ready ones.
        A new version serves only once it is warm, so the swap is atomic for requests."""
        async with self._sync_lock:
            found = discover(self._config.repository, names or list(self._config.models) or None)
            self._missing = [n for n in self._missing if n not in found]
            self._missing += [name for name, versions in found.items() if not versions]
            new: list[tuple[int, VersionDir]] = []
            for name, versions in found.items():
                known = self._models.setdefault(name, {})
                for v in versions:
                    entry = known.get(v.version)
                    # A version copied in while we looked may have failed half-written.
                    failed = entry is not None and entry.state is ModelState.FAILED
                    if failed and entry.files_seen != _files_now(v):  # type: ignore[union-attr]
                        del known[v.version]
                ages: dict[bool, int] = {}  # per default (see `resolve`): new versions
                for v in sorted(versions, key=lambda v: -v.version):
                    if v.version in known or (name, v.version) in self._unloaded:
                        continue
                    card = _card_or_none(v)
                    group = card is not None and needs_history(card)
                    age = ages[group] = ages.get(group, -1) + 1
                    known[v.version] = ModelVersion(name, v.version, ModelState.LOADING, None, card)
                    new.append((age, v))
            # All are listed as loading before the first one loads. The newest version of
            # every model goes first (and of a fraud model, the newest that needs no history
            # too): readiness needs the version each route serves by default.
            for _, version_dir in sorted(new, key=lambda item: item[0]):
                await self._load(version_dir)
            for name, versions in found.items():
                on_disk = {v.version for v in versions}
                for version in [v for v in self._models[name] if v not in on_disk]:
                    await self._unload(name, version)
                await self._retire_old_versions(name)

    async def unload(self, name: str, version: int | None = None) -> list[int]:
        """Stop serving a version (or all of a model's); it stays unloaded until `load`."""
        async with self._sync_lock:
            versions = self.versions(name)
            chosen = [v.version for v in versions if version is None or v.version == version]
            if version is not None and not chosen:
                raise ModelNotFound(f"model {name!r} has no version {version}")
            for number in chosen:
                self._unloaded.add((name, number))
                await self._unload(name, number)
            return chosen

    async def load(self, name: str) -> None:
        """Load whatever versions of `name` are on disk: new ones, ones unloaded before, and
        ones that failed (their files may have been fixed)."""
        self._unloaded = {(n, v) for n, v in self._unloaded if n != name}
        for version, entry in list(self._models.get(name, {}).items()):
            if entry.state is ModelState.FAILED:
                del self._models[name][version]
        await self.sync([name])
        if not self._models.get(name):
            self._models.pop(name, None)
            self._missing = [n for n in self._missing if n != name]
            raise ModelNotFound(f"no versions of {name!r} in the model repository")

    async def _unload(self, name: str, version: int) -> None:
        entry = self._models[name].pop(version)
        if entry.runtime is not None:
            # Requests already queued are answered; new ones go to the version now served.
            await entry.runtime.close(self._config.unload_grace_s)
        logger.info("model %s/%s unloaded", name, version)

    async def _retire_old_versions(self, name: str) -> None:
        keep = self._config.keep_versions
        if not keep:
            return
        # Counted per default (see `resolve`): a fraud model keeps its newest versions that
        # need no history beside those that do.
        groups: dict[bool, list[int]] = {}
        for v in self._models[name].values():
            if v.state is ModelState.READY:
                group = v.model_card is not None and needs_history(v.model_card)
                groups.setdefault(group, []).append(v.version)
        for ready in groups.values():
            for version in sorted(ready)[:-keep]:
                self._unloaded.add((name, version))  # not loaded again at the next look
                await self._unload(name, version)

    async def _load(self, version_dir: VersionDir) -> None:
        entry = self._models[version_dir.name][version_dir.version]
        assert self.providers is not None
        started = time.perf_counter()
        try:
            card = read_card(version_dir)
            entry.read(card)
            observers = None
            if self._metrics:  # the reasons graph's batcher apart: its batches are not the model's
                observers = (
                    self._metrics.for_model(card.name, card.version),
                    self._metrics.for_model(f"{card.name}{REASONS_SUFFIX}", card.version),
                )
            runtime = await asyncio.to_thread(
                ModelRuntime.load,
                card,
                version_dir.onnx_path,
                self._config.runtime,
                self.providers,
                *(observers or ()),
            )
            warm_s = await asyncio.to_thread(runtime.warm_up)
        except (InvalidModelCard, ModelLoadError) as exc:
            entry.state, entry.reason = ModelState.FAILED, str(exc)
            entry.files_seen = _files_now(version_dir)
            logger.error("model %s/%s failed to load: %s", entry.name, entry.version, exc)
            return
        runtime.start()
        entry.runtime, entry.state = runtime, ModelState.READY
        logger.info(
            "model %s/%s ready on %s (%s) in %.2fs (warm-up %.2fs, max batch %d, delay %gms, "
            "batches of up to %d rows on the event loop)",
            entry.name,
            entry.version,
            runtime.providers[0],
            runtime.precision,
            time.perf_counter() - started,
            warm_s,
            runtime.max_batch_size,
            runtime.max_queue_delay_ms,
            runtime.batcher.inline_rows,
        )

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    def resolve(
        self,
        name: str,
        version: int | None = None,
        kind: Kind | None = None,
        computes_history: bool = False,
    ) -> ModelRuntime:
        """The runtime that serves a request; the highest ready version unless one is named.
        Versions that read features only the history computes are the default only for a
        route that `computes_history` (the stateful fraud route): elsewhere clients send
        the inputs, and get the highest version that takes what they send."""
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r}")
        if version is None:
            ready = [v for v in versions.values() if v.state is ModelState.READY]
            if not computes_history:
                ready = _without_history(name, versions.values()) or ready
            if not ready:
                states = ", ".join(
                    f"{v.version}: {v.state}" + (f" ({v.reason})" if v.reason else "")
                    for v in versions.values()
                )
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
        if kind is not None and entry.runtime.model_card.kind != kind:
            raise WrongModelKind(
                f"model {name!r} is a {entry.runtime.model_card.kind}, not a {kind}"
            )
        return entry.runtime

    def not_ready(self) -> list[str]:
        """Configured models with no ready version, with their versions' states and reasons.
        A model that serves stays ready while a newer version loads or after one failed."""
        if not self._loaded.is_set() and not self._models:
            return ["the model repository is still being read"]
        problems = [f"{name}: no versions found" for name in self._missing]
        for name, versions in self._models.items():
            if any(v.state is ModelState.READY for v in versions.values()):
                # At start-up, until the version routes taking the client's inputs serve
                # is up too; later a model that serves stays ready, as above.
                if not self._loaded.is_set():
                    try:
                        _without_history(name, versions.values())
                    except ModelNotReady as exc:
                        problems.append(str(exc))
                continue
            for v in versions.values():
                problems.append(
                    f"{v.name}/{v.version}: {v.state}" + (f" ({v.reason})" if v.reason else "")
                )
        return problems

    def snapshot(self) -> list[tuple[str, int, str, int]]:
        """(name, version, state, queued rows) of every version, for metrics (rows queued
        for the model and for its reasons graph)."""
        return [
            (v.name, v.version, str(v.state), v.runtime.queued_rows if v.runtime else 0)
            for versions in self._models.values()
            for v in versions.values()
        ]

    def names(self) -> list[str]:
        return sorted(self._models)

    def unloaded(self) -> list[tuple[str, int]]:
        """(name, version) of the versions unloaded (on request, or retired) and not loaded
        since."""
        return sorted(self._unloaded)

    def versions(self, name: str) -> list[ModelVersion]:
        if name not in self._models:
            raise ModelNotFound(f"no model named {name!r}")
        return [self._models[name][v] for v in sorted(self._models[name])]

    async def close(self, timeout_s: float = 10.0) -> None:
        """Answer what is queued, stop every batcher, then release every session."""
        runtimes = [
            v.runtime
            for versions in self._models.values()
            for v in versions.values()
            if v.runtime is not None
        ]
        await asyncio.gather(*(r.close(timeout_s) for r in runtimes))
        # The registry held the last references to the sessions. As new from here: an app
        # served again (a second lifespan) loads everything again.
        self._models.clear()
        self._missing, self._unloaded = [], set()
        self._loaded = asyncio.Event()
        self.providers = None
