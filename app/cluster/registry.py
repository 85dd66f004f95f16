"""``ClusterRegistry``: the registry of the Ray mode (``AMS_RAY_ADDRESS``).

The same registry as one process's (``app.registry.Registry``: names, limits, the
catalog of memories in ``AMS_DATA_DIR``, jobs), with the memories placed on the cluster:

- hopfield memories are split over ``config.shards`` shard actors (default
  ``AMS_SHARDS``): ``ShardedMemory``;
- trained kinds (pc, pcgraph, ...) stay whole at the gateway, which trains them, and
  recall on ``config.replicas`` replica actors (default ``AMS_REPLICAS``): ``Replicated``;
- any other kind (relational memories: facts, not patterns) is held whole at the gateway,
  as in one process.

``shards`` and ``replicas`` are kept in the catalog's copy of a memory's config (so that a
restart finds its actors again) but are not part of the kind's config: the API shows
them as ``placement``. Actors are named ``ams-<cluster id>-m<memory id>-shard<i>`` (or
``-replica<i>``): the cluster id is this data directory's, so two services can share a Ray
cluster. A prober thread asks every actor how it is every ``PROBE_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..budget import MemoryBudget
from ..kinds import HopfieldMemory, LiveMemory
from ..registry import Registry
from ..settings import Settings
from ..storage import MemoryRecord, NewPattern, Storage
from ..text_memory import stored_dim
from .actors import ActorGroup
from .nodes import NoNodeForShard, ShardNodes, alive_nodes, pin_options
from .replicas import MemoryReplica, Replicated, replicated_class
from .shard import MemoryShard
from .sharded import ShardedMemory
from .storage import CLUSTER_FILE, ClusterStorage, SeqCounter, ShardFiles

__all__ = ["CLUSTER_KEYS", "ClusterRegistry"]

log = logging.getLogger("app.cluster")

CLUSTER_KEYS = ("shards", "replicas")
PROBE_SECONDS = 2.0
START_SECONDS = 300.0  # longest wait for a memory's actors to come up at create or start


def _replicated(cls: type[LiveMemory]) -> bool:
    """Whether a kind recalls on read replicas: trained kinds that store patterns."""
    return cls.trainable and cls.shaped


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the kind's config, the cluster keys) of a config as the catalog stores it."""
    kind = {k: v for k, v in config.items() if k not in CLUSTER_KEYS}
    return kind, {k: config[k] for k in CLUSTER_KEYS if k in config}


class ClusterRegistry(Registry):
    """The registry with memories on a Ray cluster (see the module docstring).

    Arguments:
        catalog: the gateway's storage (memories, and the patterns of unsharded ones).
        device: where the gateway's own copies compute (trained kinds' training).
        settings: the service's settings (``ray_*``, ``shard*``, ``replicas``).
        budget: the gateway's memory budget (what the memories it holds and the work it does
            take; each shard checks its own, ``ShardedMemory.store``).
    """

    def __init__(
        self, catalog: Storage, device: torch.device, settings: Settings, budget: MemoryBudget | None = None
    ) -> None:
        self._sharded: dict[int, ShardedMemory] = {}
        super().__init__(ClusterStorage(catalog, self._sharded.get), device, settings, budget)
        self.catalog = catalog
        self.seqs = SeqCounter(Path(settings.data_dir) / CLUSTER_FILE)
        self.nodes = ShardNodes(Path(settings.data_dir) / CLUSTER_FILE)
        self.files = ShardFiles(Path(settings.data_dir) / CLUSTER_FILE)
        self.shard_root = Path(settings.shard_data_dir or Path(settings.data_dir) / "shards").resolve()
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe_forever, name="ams-cluster-probe", daemon=True)

    # --- placement of new and recovered memories ----------------------------------------
    def _resolve_config(
        self, cls: type[LiveMemory], config: dict[str, Any], shape: tuple[int, ...], text: bool
    ) -> dict[str, Any]:
        kind_config, layout = split_config(dict(config))
        resolved = cls.resolve_config(kind_config, shape, text)
        if cls is HopfieldMemory:
            if "replicas" in layout:
                raise ValueError("hopfield memories are split by data: set config.shards, not replicas")
            return {**resolved, "shards": _count(layout, "shards", self.settings.shards, 1024)}
        if "shards" in layout:
            raise ValueError(
                f"kind {cls.kind} is not split by data: set config.replicas (read copies), not shards"
            )
        if _replicated(cls):
            return {**resolved, "replicas": _count(layout, "replicas", self.settings.replicas, 64)}
        if "replicas" in layout:
            raise ValueError(f"kind {cls.kind} is held whole at the gateway: it takes no config.replicas")
        return resolved

    def _new(self, cls: type[LiveMemory], record: MemoryRecord) -> Any:
        try:
            return self._place(cls, record, None, max(60.0, self.settings.shard_timeout_s))
        except NoNodeForShard:  # nothing was started: the create fails whole (503)
            self.catalog.delete_memory(record.id)
            raise

    def _load(self, cls: type[LiveMemory], record: MemoryRecord) -> Any:
        return self._place(cls, record, super()._load, START_SECONDS)

    def _place(self, cls: type[LiveMemory], record: MemoryRecord, load: Any, wait: float) -> Any:
        """The memory in RAM with its actors started; waits up to ``wait`` seconds for them (an
        actor Ray cannot place yet stays "down", and its memory answers 503, until it can)."""
        kind_config, layout = split_config(record.config)
        kind_record = replace(record, config=cls.stored_config(kind_config))
        if cls is HopfieldMemory:  # a memory placed before AMS_SHARD_STORAGE existed stays shared
            mode = self.settings.shard_storage if load is None else "shared"
            return self._sharded_memory(kind_record, int(layout.get("shards", 1)), wait, mode, load is None)
        if not _replicated(cls):
            return load(cls, kind_record) if load else cls(kind_record, self.device)
        rcls = replicated_class(cls)
        live = load(rcls, kind_record) if load else rcls(kind_record, self.device)
        replicas = int(layout.get("replicas", 1))
        names = [self._actor_name(record, f"replica{i}") for i in range(replicas)]
        spec = {"device": self.settings.device, "threads": self.settings.shard_threads}
        group = ActorGroup(record.name, "replica", MemoryReplica, names, [spec] * replicas, self.settings)
        live.attach(group, self.catalog)
        group.probe(wait)
        live.load_all()
        return live

    def _sharded_memory(
        self, record: MemoryRecord, shards: int, wait: float, mode: str, new: bool
    ) -> ShardedMemory:
        """Start (or find) the memory's shards, each on its recorded node (``nodes.py``) with
        its file's recorded identity (``ShardFiles``); ``mode`` applies to a memory without a
        record; ``new``: the memory is being created now (its shards make their files)."""
        alive = alive_nodes(self.settings.shard_cpus, self.settings.shard_gpus)
        pins = self.nodes.nodes(record.id, shards, mode, alive)
        files = self.files.expected(record.id, shards, new)
        if any(pin and pin not in alive for pin in pins):  # it cannot come up now: do not wait long
            log.warning("memory %r: a shard's node is not in the cluster (%s)", record.name, pins)
            wait = min(wait, self.settings.shard_timeout_s)
        specs = [
            {
                "name": record.name,
                "shape": list(record.shape),
                "text": record.text,
                "config": record.config,
                "shard": i,
                "shards": shards,
                "data_dir": str(self.shard_root / f"m{record.id}" / f"shard-{i}"),
                "node_dir": f"{self.seqs.cluster_id}/m{record.id}/shard-{i}" if pins[i] else "",
                "device": self.settings.device,
                "threads": self.settings.shard_threads,
                "memory_budget": int(self.settings.shard_memory_budget or 0) or None,
                "file_token": files[i][0],
                "create_file": files[i][1],
            }
            for i in range(shards)
        ]
        names = [self._actor_name(record, f"shard{i}") for i in range(shards)]
        group = ActorGroup(
            record.name, "shard", MemoryShard, names, specs, self.settings, [pin_options(p) for p in pins]
        )
        group.probe(wait)  # waits for the shards to load their partitions
        self.seqs.start(record.id, max((info or {}).get("max_seq", 0) for info in group.infos))
        memory = ShardedMemory(record, group, self.seqs)
        memory.learn_counts()
        self._confirm_files(memory)
        self._sharded[record.id] = memory
        return memory

    def _confirm_files(self, memory: ShardedMemory) -> None:
        """Record the file identity each shard reported (see ``ShardFiles``): from then on a
        missing or foreign file stops that shard instead of being made anew."""
        for i, info in enumerate(memory.shards.infos):
            if info is not None and info.get("file_token"):
                self.files.confirm(memory.record.id, i, info["file_token"])

    def _actor_name(self, record: MemoryRecord, role: str) -> str:
        return f"ams-{self.seqs.cluster_id}-m{record.id}-{role}"

    def recover(self) -> int:
        loaded = super().recover()
        self._prober.start()
        return loaded + sum(m.count for m in self._sharded.values())

    # --- writes -----------------------------------------------------------------------------
    @contextmanager
    def storing(self, live: Any, count: int) -> Iterator[None]:
        """As one process's, but a sharded memory's index is not at the gateway: it holds the
        batch on its way to the shards only (the shards' own budgets: ``ShardedMemory.store``)."""
        if not isinstance(live, ShardedMemory):
            with super().storing(live, count):
                yield
            return
        rows = stored_dim(live.record.shape, live.record.text) * 4
        with self.budget.reserve(rows * 4 * count, f"storing {count} patterns in {live.name!r}"):
            yield

    def store(self, live: Any, patterns: list[NewPattern], vectors: Tensor) -> tuple[list[str], int]:
        if isinstance(live, ShardedMemory):
            return live.store(patterns)
        if isinstance(live, Replicated):
            with live.sync_lock:
                ids, count = super().store(live, patterns, vectors)
                live.pushed_add(len(ids))
            return ids, count
        return super().store(live, patterns, vectors)

    def delete_pattern(self, name: str, pattern_id: str) -> None:
        live = self.get(name)
        if isinstance(live, ShardedMemory):
            live.delete_pattern(pattern_id)
        elif isinstance(live, Replicated):
            with live.sync_lock:
                super().delete_pattern(name, pattern_id)
                live.push([("remove", pattern_id)])
        else:
            super().delete_pattern(name, pattern_id)

    def delete(self, name: str) -> None:
        live = self.get(name)
        super().delete(name)
        if isinstance(live, ShardedMemory):
            group = live.shards
            group.settle({i: group.call(i, "destroy") for i in range(len(group))})
            self._sharded.pop(live.record.id, None)
            self.seqs.forget(live.record.id)
            self.nodes.forget(live.record.id)
            self.files.forget(live.record.id)
            group.kill()
        elif isinstance(live, Replicated):
            group = live.replicas
            group.settle({i: group.call(i, "destroy") for i in range(len(group))})
            group.kill()

    # --- health -----------------------------------------------------------------------------
    def groups(self) -> list[tuple[str, ActorGroup]]:
        """(memory name, its shards or replicas) for every memory placed on the cluster."""
        out = []
        for live in self.all():
            if isinstance(live, ShardedMemory):
                out.append((live.name, live.shards))
            elif isinstance(live, Replicated):
                out.append((live.name, live.replicas))
        return out

    def unavailable(self) -> str | None:
        for _, group in self.groups():
            why = group.unavailable()
            if why:
                return why
        return None

    def _probe_forever(self) -> None:
        while not self._stop.wait(PROBE_SECONDS):
            for _, group in self.groups():
                try:
                    group.probe(max(1.0, PROBE_SECONDS * 2))
                except Exception:  # a probe must never end the prober
                    log.exception("probing %s actors failed", group.role)
            for memory in list(self._sharded.values()):
                try:
                    self._confirm_files(memory)
                except Exception:  # (cluster.sqlite3 busy: the next round records it)
                    log.exception("recording the shard files of %r failed", memory.name)

    def close(self) -> None:
        self._stop.set()
        if self._prober.is_alive():  # its round may be writing cluster.sqlite3: let it end first
            self._prober.join(timeout=PROBE_SECONDS * 4)
        super().close()
        self.seqs.close()
        self.nodes.close()
        self.files.close()


def _count(layout: dict[str, Any], key: str, default: int, most: int) -> int:
    value = layout.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"config.{key} must be an integer from 1 to {most}, got {value!r}")
    return value
