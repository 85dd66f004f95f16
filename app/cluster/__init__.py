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

import torch

from ..budget import MemoryBudget
from ..metrics import Metrics
from ..registry import Registry
from ..settings import Settings
from ..storage import Storage

__all__ = ["connect", "start_registry"]

log = logging.getLogger("app.cluster")


def connect(settings: Settings) -> None:
    """Join the Ray cluster at ``AMS_RAY_ADDRESS`` as a driver (once per process).

    The gateway runs on a node of the cluster (a Ray driver needs a local raylet: the head,
    or a node started with ``ray start --address ... --num-cpus 0``). ``AMS_RAY_NODE_IP``
    names this node's address where Ray's guess is wrong (e.g. the loopback cluster of
    ``app.cluster.local``). A cluster with token authentication (RAY_AUTH_MODE=token, Ray's
    default for local clusters from 2.59 on) needs its RAY_AUTH_TOKEN (or
    RAY_AUTH_TOKEN_PATH) in this environment.
    """
    import ray

    if not ray.is_initialized():
        address = settings.ray_address or "auto"
        extra = {} if settings.ray_node_ip is None else {"_node_ip_address": settings.ray_node_ip}
        ray.init(address=address, namespace=settings.ray_namespace, logging_level="WARNING", **extra)
        log.info("connected to the Ray cluster at %s (namespace %s)", address, settings.ray_namespace)


def start_registry(
    catalog: Storage, device: torch.device, settings: Settings, metrics: Metrics, budget: MemoryBudget
) -> tuple[Registry, int]:
    """Connect, then a ``ClusterRegistry`` with every stored memory placed on the cluster
    (blocks until their actors are up), under the gateway's memory ``budget``, its per-shard
    gauges added to ``metrics``; returns it and the number of patterns its memories hold."""
    connect(settings)
    from .metrics import ShardCollector
    from .registry import ClusterRegistry

    registry = ClusterRegistry(catalog, device, settings, budget)
    patterns = registry.recover()
    metrics.registry.register(ShardCollector(registry.groups))
    return registry, patterns
