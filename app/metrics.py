"""Prometheus metrics, names prefixed ``ams_``, in a registry of the app's own.

Request counts and latencies per endpoint come from ``MetricsMiddleware`` (labelled
by the route's path template, so ``/v1/memories/{name}`` is one series however many
memories there are). The micro-batcher (``batching.py``) records batch sizes, batch
times and queue waits. Memory sizes, recall queue depths and job progress are read at
scrape time by ``_LiveCollector``, through the callables ``Metrics`` is given (it knows
nothing of the service), so they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

disable_created_metrics()  # no *_created series: they double the output and say little

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _LiveCollector:
    """Gauges read at scrape time from ``Metrics``' callables."""

    def __init__(self, sources: Metrics) -> None:
        self._sources = sources

    def describe(self) -> list[Metric]:
        return []  # built at collect time; nothing to pre-declare

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("ams_ready", "1 once storage is recovered and memories are loaded")
        src = self._sources
        ready.add_metric([], 1.0 if src.ready() else 0.0)
        yield ready
        memories = GaugeMetricFamily("ams_memories", "memories held")
        patterns = GaugeMetricFamily(
            "ams_memory_patterns", "stored patterns per memory", labels=["memory", "kind"]
        )
        trained = GaugeMetricFamily(
            "ams_memory_trained_patterns", "patterns the recall model has learned", labels=["memory", "kind"]
        )
        progress = GaugeMetricFamily(
            "ams_job_progress", "progress (0..1) of unfinished jobs", labels=["job", "memory"]
        )
        energy = GaugeMetricFamily(
            "ams_job_energy", "last reported energy of unfinished jobs", labels=["job", "memory"]
        )
        nbytes = GaugeMetricFamily(
            "ams_memory_bytes", "bytes of the tensors a memory holds in RAM", labels=["memory", "kind"]
        )
        depth = GaugeMetricFamily(
            "ams_recall_queue_depth",
            "recalls of a memory waiting for or computing in a micro-batch",
            labels=["memory"],
        )
        epoch = GaugeMetricFamily("ams_job_epoch", "epochs done by unfinished jobs", labels=["job", "memory"])
        lives = src.memories()
        memories.add_metric([], float(len(lives)))
        for live in lives:
            details = live.details()
            patterns.add_metric([live.name, live.kind], float(details["count"]))
            trained.add_metric([live.name, live.kind], float(details["trained_count"]))
            nbytes.add_metric([live.name, live.kind], float(live.nbytes()))
        queued = src.queue_depths()
        for live in lives:  # memories that were deleted keep no series
            depth.add_metric([live.name], float(queued.get(live, 0)))
        for job in src.jobs():
            progress.add_metric([job["id"], job["memory"]], job["progress"])
            epoch.add_metric([job["id"], job["memory"]], float(job["epoch"]))
            if job["energy"] is not None:
                energy.add_metric([job["id"], job["memory"]], job["energy"])
        yield from (memories, patterns, trained, nbytes, depth, progress, epoch, energy)


class Metrics:
    """The app's metrics registry and the counters the service updates.

    Arguments (what the gauges read at scrape time; each defaults to "nothing"):
        ready: whether the service is ready.
        memories: the live memories (``LiveMemory``: name, kind, ``details()``, ``nbytes()``).
        queue_depths: memory -> recalls waiting for or computing in a micro-batch.
        jobs: unfinished jobs as dicts ({"id", "memory", "progress", "epoch", "energy"}).
    """

    def __init__(
        self,
        ready: Callable[[], bool] = lambda: False,
        memories: Callable[[], list[Any]] = list,
        queue_depths: Callable[[], dict[Any, int]] = dict,
        jobs: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self.ready, self.memories, self.queue_depths, self.jobs = ready, memories, queue_depths, jobs
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ams_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ams_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.patterns_stored = Counter(
            "ams_patterns_stored", "patterns stored (acknowledged)", ["kind"], registry=self.registry
        )
        self.recalls = Counter(
            "ams_recalls",
            "recalls answered (retrieve, complete, lookup)",
            ["kind", "endpoint"],
            registry=self.registry,
        )
        self.recall_batch_size = Histogram(
            "ams_recall_batch_size",
            "recalls answered by one batched memory call",
            ["kind"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.recall_batch_seconds = Histogram(
            "ams_recall_batch_duration_seconds",
            "time of one batched memory call",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.recall_queue_wait = Histogram(
            "ams_recall_queue_wait_seconds",
            "time a recall waited in its memory's queue before its batch started",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests and times them, labelled by route template (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics]) -> None:
        self.app, self._metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics = self._metrics()
            metrics.requests.labels(scope["method"], template, str(status)).inc()
            metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - start)
