"""The service's parts, built once per app: settings, device, storage, registry, metrics, batcher.

``start`` (run on a worker thread by the app's lifespan) opens storage and rebuilds
every memory from it; until it has finished, ``is_ready`` is False and /readyz and
/v1 answer 503.
"""

from __future__ import annotations

import logging
import threading

import torch

from memory_core import resolve_device

from .batching import Batcher
from .budget import MemoryBudget, available_memory
from .metrics import Metrics
from .registry import Registry
from .settings import Settings
from .storage import CLUSTER_FILE, SQLiteStorage, Storage
from .text_memory import embed

__all__ = ["Service"]

log = logging.getLogger("app")


class Service:
    """Everything a request handler needs, reached as ``request.app.state.service``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.metrics = Metrics(
            ready=lambda: self.is_ready,
            memories=lambda: self.registry.all() if self.registry is not None else [],
            queue_depths=lambda: dict(self.batcher.depths()),
            jobs=lambda: self.registry.jobs.running() if self.registry is not None else [],
        )
        self.batcher = Batcher(settings.recall_batch_max, settings.recall_batch_wait_ms, self.metrics)
        if settings.memory_budget:
            limit, source = int(settings.memory_budget), "AMS_MEMORY_BUDGET"
        else:
            free, source = available_memory()
            limit, source = max(1 << 26, free // 2), f"half of the free memory ({source})"
        self.budget = MemoryBudget(limit)
        log.info("memory budget: %d MiB (%s)", limit >> 20, source)
        self.storage: Storage | None = None
        self.registry: Registry | None = None
        self.error: str | None = None
        self._ready = threading.Event()

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def start(self) -> None:
        """Open storage and rebuild every memory (blocking; the lifespan runs it on a thread)."""
        try:
            self.storage = SQLiteStorage(self.settings.data_dir)
            if self.settings.ray_address:  # the Ray mode: app/cluster/ (only then is Ray imported)
                from .cluster import start_registry

                registry, patterns = start_registry(
                    self.storage, self.device, self.settings, self.metrics, self.budget
                )
            else:
                if (self.settings.data_dir / CLUSTER_FILE).exists():
                    raise RuntimeError(
                        f"{self.settings.data_dir} holds memories of the Ray mode (their patterns are in "
                        "their shards): serve it with AMS_RAY_ADDRESS set"
                    )
                registry = Registry(self.storage, self.device, self.settings, self.budget)
                patterns = registry.recover()
            if any(live.record.text for live in registry.all()):
                self._load_text_model()
        except Exception as exc:  # stays not ready, and says why on /readyz
            log.exception("recovery failed")
            self.error = f"recovery failed: {type(exc).__name__}: {exc}"
            return
        self.registry = registry
        self._ready.set()
        log.info(
            "ready: %d memories, %d patterns, data in %s, device %s",
            len(registry.all()),
            patterns,
            self.settings.data_dir.resolve(),  # "data in data" (the default, relative) said little
            self.device,
        )

    def _load_text_model(self) -> None:
        """Load the caption model now, before ready, when text memories exist: its first load
        holds the interpreter for up to a second in places (imports), which would otherwise
        stall every request of the first caption store or text query."""
        try:
            embed(["warm up"], self.device)
        except Exception as exc:  # a deployment without it answers 501 when it is needed
            log.warning("caption model not loaded: %s", exc)

    def close(self) -> None:
        """Stop jobs and release storage."""
        self._ready.clear()
        if self.registry is not None:
            self.registry.close()
        if self.storage is not None:
            self.storage.close()
