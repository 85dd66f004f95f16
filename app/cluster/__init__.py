"""The Ray mode: memories sharded and replicated over a Ray cluster (docs/scale.md).

Imported only when ``AMS_RAY_ADDRESS`` is set (``Service.start``); one process needs no
Ray. The gateway is this FastAPI app, in its own process, holding handles to the actors:

- ``shard.MemoryShard`` (``ray::MemoryShard``): a hopfield memory's partition, with its
  own SQLite file; ``sharded.ShardedMemory`` merges the shards' parts exactly
  (``memory_core.partials``);
- ``replicas.MemoryReplica`` (``ray::MemoryReplica``): a read copy of a trained memory;
- ``registry.ClusterRegistry``: places memories on the cluster and probes the actors.
"""

from __future__ import annotations

import logging
import os

import torch

from ..metrics import Metrics
from ..registry import Registry
from ..settings import Settings
from ..storage import Storage

__all__ = ["connect", "start_registry"]

log = logging.getLogger("app.cluster")


def connect(settings: Settings) -> None:
    """Join the Ray cluster at ``AMS_RAY_ADDRESS`` as a driver (once per process).

    A cluster on this machine's loopback (127.0.0.1 / localhost) needs Ray to use
    127.0.0.1 as this node's address too (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). A cluster
    with token authentication (RAY_AUTH_MODE=token, Ray's default for local clusters from
    2.59 on) needs the same RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) in this environment.
    """
    address = settings.ray_address or "auto"
    host = address.split("://")[-1].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=settings.ray_namespace, logging_level="WARNING")
        log.info("connected to the Ray cluster at %s (namespace %s)", address, settings.ray_namespace)


def start_registry(
    catalog: Storage, device: torch.device, settings: Settings, metrics: Metrics
) -> tuple[Registry, int]:
    """Connect, then a ``ClusterRegistry`` with every stored memory placed on the cluster
    (blocks until their actors are up), its per-shard gauges added to ``metrics``; returns it
    and the number of patterns its memories hold."""
    connect(settings)
    from .metrics import ShardCollector
    from .registry import ClusterRegistry

    registry = ClusterRegistry(catalog, device, settings)
    patterns = registry.recover()
    metrics.registry.register(ShardCollector(registry.groups))
    return registry, patterns
