"""Trained kinds (pc, pcgraph, ...) in the Ray mode: one trained model, R read replicas.

A trained memory is not split by data: the gateway keeps it whole, as one process does
(its patterns in the catalog's storage, training as a background job there), and its
recalls run on R ``MemoryReplica`` actors (``ray::MemoryReplica``), each a copy of the
same kind holding the stored patterns and the last trained checkpoint. A replica loads
the checkpoint through the kind's own ``restore`` (whatever files the kind writes), so it
never depends on a kind's internals.

Versions keep replicas exact: every store, delete or new model bumps the memory's
version and is sent to the replicas as a delta; a recall names the version it needs,
and a replica that is behind (it missed a delta, or Ray restarted it empty) says so and
is sent a whole snapshot first. A recall goes to the replicas in turn; if none answers,
503.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, replace
from typing import Any

import torch

from memory_core import resolve_device

from ..exceptions import ShardUnavailable
from ..jobs import JobContext
from ..kinds import LiveMemory, kind_class
from ..storage import MemoryRecord, SQLiteStorage, Storage
from .actors import ActorGroup, node_id, node_ip
from .scratch import Scratch, sweep_now_and_then

__all__ = ["MemoryReplica", "Replicated", "replicated_class"]

Op = tuple[str, Any]  # ("add", (seqs, ids, vectors)), ("remove", id), ("model", (extra, files))
_STALE = "stale"


class MemoryReplica:
    """A read replica of a trained memory (a Ray actor; see the module docstring).

    Its copy of the checkpoint files is in a scratch folder of its own under the node's
    scratch root (``scratch.py``): removed when the memory is deleted (``destroy``) or the
    actor ends gracefully; after a ``kill -9`` the next actor to start or probe on the node
    sweeps it.

    Arguments:
        spec: ``device`` and ``threads``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        torch.set_num_threads(int(spec["threads"]))
        self.device = resolve_device(spec["device"])
        self.scratch = Scratch("replica")  # (sweeps the node's orphans first)
        self.storage = SQLiteStorage(self.scratch.path)  # only its checkpoint folders are used
        self.live: LiveMemory | None = None
        self.version = -1  # nothing loaded: the first recall asks for a snapshot
        self.incarnation = secrets.token_hex(8)
        self.recalls = 0
        self.recall_seconds = 0.0

    def info(self) -> dict[str, Any]:
        sweep_now_and_then()  # (the gateway's health probe calls this every 2 s)
        live = self.live
        return {
            "incarnation": self.incarnation,
            "version": self.version,
            "patterns": 0 if live is None else live.count,
            "bytes": 0 if live is None else live.nbytes(),
            "node": socket.gethostname(),
            "node_ip": node_ip(),
            "node_id": node_id(),
            "pid": os.getpid(),
            "device": str(self.device),
            "recalls": self.recalls,
            "recall_seconds": self.recall_seconds,
        }

    def load(self, version: int, snapshot: dict[str, Any]) -> None:
        """Become a copy of the memory at ``version``."""
        record = MemoryRecord(**snapshot["record"])
        live = kind_class(record.kind)(record, self.device)
        self._write_files(record, snapshot["files"])
        with live.rw.write():
            if snapshot["ids"]:
                live.add(snapshot["seqs"], snapshot["ids"], snapshot["vectors"])
            live.restore(self.storage)
        self.live, self.version = live, version

    def sync(self, base: int, version: int, ops: list[Op]) -> bool:
        """Apply deltas that lead from ``base`` to ``version``; False (nothing applied) when
        this replica is not at ``base``."""
        live = self.live
        if live is None or self.version != base:
            return False
        with live.rw.write():
            for op, arg in ops:
                if op == "add":
                    live.add(*arg)
                elif op == "remove":
                    live.remove(arg)
                else:  # "model": a new checkpoint landed
                    extra, files = arg
                    live.record = replace(live.record, extra=extra)
                    self._write_files(live.record, files)
                    live.restore(self.storage)
        self.version = version
        return True

    def call(self, version: int, method: str, *args: Any) -> Any:
        """``live.<method>(*args)`` (recall_batch, lookup_text, lookup_captions) if this replica
        is at ``version`` or later, else "stale"."""
        if self.live is None or self.version < version:
            return _STALE
        start = time.perf_counter()
        try:
            return getattr(self.live, method)(*args)
        finally:
            self.recalls += 1
            self.recall_seconds += time.perf_counter() - start

    def destroy(self) -> None:
        """Its memory was deleted: remove its scratch folder (the actor is killed next)."""
        self.storage.close()
        self.scratch.release()

    def __ray_shutdown__(self) -> None:
        """Ray ends the actor gracefully (its handles gone, ``__ray_terminate__``)."""
        self.destroy()

    def _write_files(self, record: MemoryRecord, files: dict[str, bytes]) -> None:
        folder = self.storage.checkpoint_dir(record.id)
        for name, data in files.items():
            (folder / name).write_bytes(data)


class Replicated:
    """Mixed into a trained kind's class at the gateway (``replicated_class``): recalls go to
    the replicas, writes and new models are sent to them. The gateway's own copy stays the
    one that stores, trains and says the memory's state."""

    replicas: ActorGroup
    catalog: Storage

    def attach(self, replicas: ActorGroup, catalog: Storage) -> None:
        """Serve recalls from these replicas; ``catalog`` holds the checkpoints."""
        self.replicas, self.catalog = replicas, catalog
        # Above any version a gateway before this one gave out (replicas outlive gateways):
        # a replica still at an old version is behind, and is sent a snapshot.
        self.version = time.time_ns()
        self.sync_lock = threading.Lock()  # writes and their deltas, in order
        self._turn = itertools.count()

    # --- recalls ------------------------------------------------------------------------------
    def recall_batch(self, cues, masks, k, steps):  # type: ignore[no-untyped-def]
        return [self._local_state(r) for r in self._on_replica("recall_batch", cues, masks, k, steps)]

    def lookup_text(self, embeddings, k):  # type: ignore[no-untyped-def]
        return self._local_state(self._on_replica("lookup_text", embeddings, k))

    def lookup_captions(self, cues, masks, k):  # type: ignore[no-untyped-def]
        return self._local_state(self._on_replica("lookup_captions", cues, masks, k))

    def _local_state(self, answer: Any) -> Any:
        """The memory's state as the gateway knows it (a replica does not know of a training job)."""
        with self.rw.read():  # type: ignore[attr-defined]
            return replace(answer, state=self.state, trained_count=self.trained_count)  # type: ignore[attr-defined]

    def _on_replica(self, method: str, *args: Any) -> Any:
        with self.rw.read():  # type: ignore[attr-defined]
            self._check_recallable()  # type: ignore[attr-defined]
            untrained = getattr(self, "model", True) is None
        if untrained:  # answered here, as the kind answers it (NotTrained)
            return getattr(super(), method)(*args)
        version, n = self.version, len(self.replicas)
        first = next(self._turn)
        error: ShardUnavailable | None = None
        for attempt in range(n):
            index = (first + attempt) % n
            try:
                answer = self._ask(index, version, method, args)
            except ShardUnavailable as exc:
                error = exc
                continue
            return answer
        raise error if error is not None else ShardUnavailable(f"memory {self.name!r} has no replica")  # type: ignore[attr-defined]

    def _ask(self, index: int, version: int, method: str, args: tuple) -> Any:
        group = self.replicas
        answer = group.wait({index: group.call(index, "call", version, method, *args)})[index]
        if isinstance(answer, str) and answer == _STALE:
            self._resync(index)
            answer = group.wait({index: group.call(index, "call", version, method, *args)})[index]
            if isinstance(answer, str) and answer == _STALE:
                raise ShardUnavailable(f"memory {self.name!r}: replica {index} is catching up; retry shortly")  # type: ignore[attr-defined]
        return answer

    # --- keeping replicas in step -------------------------------------------------------------
    def _snapshot(self) -> tuple[int, dict[str, Any]]:
        with self.rw.read():  # type: ignore[attr-defined]
            record = self._record_now()
            ids = list(self.ids)  # type: ignore[attr-defined]
            vectors = self.index.keys.detach().to("cpu", torch.float32).clone() if ids else None  # type: ignore[attr-defined]
            return self.version, {
                "record": asdict(record),
                "seqs": list(self.seqs),  # type: ignore[attr-defined]
                "ids": ids,
                "vectors": vectors,
                "files": self._files(record),
            }

    def _record_now(self) -> MemoryRecord:
        """The record with its kind state as stored now (what names the current checkpoint)."""
        record: MemoryRecord = self.record  # type: ignore[attr-defined]
        for stored in self.catalog.list_memories():
            if stored.id == record.id:
                return replace(record, extra=stored.extra)
        return record

    def _files(self, record: MemoryRecord) -> dict[str, bytes]:
        """The files of the memory's checkpoint folder (only what the record names is loaded)."""
        folder = self.catalog.checkpoint_dir(record.id)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    def _resync(self, index: int) -> None:
        version, snapshot = self._snapshot()
        self.replicas.wait({index: self.replicas.call(index, "load", version, snapshot)})

    def load_all(self) -> None:
        """Every replica becomes a copy of the memory as it is (at start and creation)."""
        version, snapshot = self._snapshot()
        import ray

        ref = ray.put(snapshot)
        self.replicas.settle(
            {i: self.replicas.call(i, "load", version, ref) for i in range(len(self.replicas))}
        )

    def push(self, ops: list[Op]) -> None:
        """Send deltas to every replica (caller holds ``sync_lock``); one that is behind or
        does not answer catches up from a snapshot at its next recall."""
        base, self.version = self.version, self.version + 1
        self.replicas.settle(
            {i: self.replicas.call(i, "sync", base, self.version, ops) for i in range(len(self.replicas))}
        )

    def pushed_add(self, n: int) -> None:
        """The last ``n`` patterns were stored: send them (caller holds ``sync_lock``)."""
        with self.rw.read():  # type: ignore[attr-defined]
            seqs, ids = list(self.seqs[-n:]), list(self.ids[-n:])  # type: ignore[attr-defined]
            vectors = self.index.keys[-n:].detach().to("cpu", torch.float32).clone()  # type: ignore[attr-defined]
        self.push([("add", (seqs, ids, vectors))])

    def training(self, storage: Storage, epochs: int | None):  # type: ignore[no-untyped-def]
        """The kind's training job, and then the new checkpoint sent to the replicas."""
        work, patterns, total = super().training(storage, epochs)  # type: ignore[misc]

        def work_then_push(ctx: JobContext) -> None:
            work(ctx)
            if not ctx.cancelled and not self.deleted:  # type: ignore[attr-defined]
                with self.sync_lock:
                    record = self._record_now()
                    self.push([("model", (record.extra, self._files(record)))])

        return work_then_push, patterns, total

    def details(self) -> dict[str, Any]:
        return {**super().details(), "placement": self.replicas.placement()}  # type: ignore[misc]

    def unavailable(self) -> str | None:
        return self.replicas.unavailable()


_CLASSES: dict[type, type] = {}


def replicated_class(cls: type[LiveMemory]) -> type[LiveMemory]:
    """``cls`` with recalls on replicas (``Replicated`` mixed in); one class per kind."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Replicated{cls.__name__}", (Replicated, cls), {})
    return _CLASSES[cls]
