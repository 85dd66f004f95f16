"""The live memories in RAM, kept in step with durable storage, and their jobs.

Every write goes to storage first (durable on return) and then to RAM, under the
memory's ``writing`` lock so that storage and RAM see the same order; RAM changes
take the memory's ``rw`` write lock so that recalls never see half a change. On
start, ``recover`` rebuilds every memory from storage. All methods block: call
them from worker threads, never from the event loop.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from .exceptions import (
    DimensionTooLarge,
    InvalidConfig,
    InvalidShape,
    JobRunning,
    MemoryEmpty,
    MemoryExists,
    MemoryNotFound,
    NotTrainable,
    PatternExists,
    PatternNotFound,
    TooManyMemories,
)
from .jobs import JobManager
from .kinds import KINDS, LiveMemory, kind_class
from .settings import Settings
from .storage import MemoryRecord, NewPattern, Storage

__all__ = ["Registry"]

log = logging.getLogger("app.registry")


class Registry:
    """The memories the service holds.

    Arguments:
        storage: where memories and patterns are kept.
        device: where tensors live.
        settings: limits and job settings.
    """

    def __init__(self, storage: Storage, device: torch.device, settings: Settings) -> None:
        self.storage = storage
        self.device = device
        self.settings = settings
        self.jobs = JobManager(workers=settings.train_workers, keep=settings.jobs_kept)
        self._memories: dict[str, LiveMemory] = {}
        self._lock = threading.Lock()  # the dict only: held for moments, never across I/O
        self._creating = threading.Lock()  # one create at a time (name check + durable insert)

    # --- start ------------------------------------------------------------------------
    def recover(self) -> int:
        """Rebuild every memory from storage (configs in today's form: ``stored_config``);
        returns how many patterns were loaded."""
        loaded = 0
        for record in self.storage.list_memories():
            cls = KINDS.get(record.kind)
            if cls is None:  # written by a newer version: leave its data alone
                log.warning(
                    "memory %r has kind %r, which this version does not serve; skipped",
                    record.name,
                    record.kind,
                )
                continue
            live = self._load(cls, record)
            loaded += live.count
            with self._lock:
                self._memories[record.name] = live
            log.info("recovered memory %r (%s, %d patterns)", record.name, record.kind, live.count)
        return loaded

    def _load(self, cls: type[LiveMemory], record: MemoryRecord) -> LiveMemory:
        """A stored memory in RAM again: its patterns in storage order, then its kind's state."""
        live = cls(replace(record, config=cls.stored_config(record.config)), self.device)
        with live.rw.write():
            for seqs, ids, vectors in self.storage.iter_vectors(record.id):
                live.add(seqs, ids, torch.from_numpy(vectors))
            live.restore(self.storage)
        return live

    def _new(self, cls: type[LiveMemory], record: MemoryRecord) -> LiveMemory:
        """A memory just created (empty) in RAM."""
        return cls(record, self.device)

    def _resolve_config(
        self, cls: type[LiveMemory], config: dict[str, Any], shape: tuple[int, ...], text: bool
    ) -> dict[str, Any]:
        """A create request's config resolved as stored (ValueError / TypeError if bad)."""
        return cls.resolve_config(dict(config), shape, text)

    def unavailable(self) -> str | None:
        """Why some memory cannot serve now (/readyz says 503 with it), or None: every part of
        every memory is up. One process holds every memory whole: always None."""
        return None

    def close(self) -> None:
        self.jobs.shutdown()

    # --- memories ---------------------------------------------------------------------
    def get(self, name: str) -> LiveMemory:
        with self._lock:
            live = self._memories.get(name)
        if live is None:
            raise MemoryNotFound(name)
        return live

    def all(self) -> list[LiveMemory]:
        with self._lock:
            return sorted(self._memories.values(), key=lambda m: m.record.id)

    def create(
        self, name: str, kind: str, shape: list[int] | None, text: bool, config: dict[str, Any]
    ) -> LiveMemory:
        """Validate and create a memory (durable on return); ``shape`` None only for a kind
        that stores no patterns (relational)."""
        cls = kind_class(kind)
        shape_t = self._check_shape(shape) if cls.shaped else _no_shape(cls, shape, text)
        try:
            resolved = self._resolve_config(cls, config, shape_t, text)
        except (ValueError, TypeError) as exc:
            raise InvalidConfig(str(exc)) from None
        with self._creating:
            with self._lock:
                taken, held = name in self._memories, len(self._memories)
            if taken:
                raise MemoryExists(name)
            if held >= self.settings.max_memories:
                raise TooManyMemories(
                    f"the service holds {self.settings.max_memories} memories already (AMS_MAX_MEMORIES)"
                )
            record = self.storage.create_memory(name, kind, shape_t, text, resolved)  # MemoryExists too
            live = self._new(cls, record)
            with self._lock:
                self._memories[name] = live
        return live

    def _check_shape(self, shape: list[int] | None) -> tuple[int, ...]:
        if shape is None:
            raise InvalidShape("shape is required: [D] for vectors, [C, H, W] for pictures")
        if len(shape) not in (1, 3) or any(not isinstance(s, int) or s < 1 for s in shape):
            raise InvalidShape(f"shape must be [D] or [C, H, W] of positive integers, got {shape}")
        if len(shape) == 3 and shape[0] not in (1, 3):
            raise InvalidShape(f"an image memory has C = 1 (grey) or 3 (RGB) channels, got {shape[0]}")
        dim = 1
        for s in shape:
            dim *= s
        if dim > self.settings.max_dim:
            raise DimensionTooLarge(
                f"shape {shape} has D = {dim}; the limit is {self.settings.max_dim} (AMS_MAX_DIM)"
            )
        return tuple(shape)

    def delete(self, name: str) -> None:
        """Delete a memory and its data (its running job is cancelled first)."""
        live = self.get(name)
        self.jobs.cancel_memory(name, wait=30.0)
        with live.writing:
            if live.deleted:
                raise MemoryNotFound(name)
            self.storage.delete_memory(live.record.id)
            live.deleted = True
            with self._lock:
                if self._memories.get(name) is live:
                    del self._memories[name]

    # --- patterns ---------------------------------------------------------------------
    def store(self, live: LiveMemory, patterns: list[NewPattern], vectors: Tensor) -> tuple[list[str], int]:
        """Store a batch checked against ``live``'s record (vectors (n, D)); returns (ids, count),
        durable on return. 404 if that memory was deleted meanwhile (even if one of the same
        name was created since: the batch was checked against the old one's shape)."""
        name = live.name
        with live.writing:
            if live.deleted:
                raise MemoryNotFound(name)
            taken = [p.id for p in patterns if live.has(p.id)]
            if taken:
                raise PatternExists(name, taken)
            seqs = self.storage.add_patterns(
                live.record.id, patterns
            )  # PatternExists too (should not happen)
            ids = [p.id for p in patterns]
            with live.rw.write():
                live.add(seqs, ids, vectors)
                count = live.count
        return ids, count

    def delete_pattern(self, name: str, pattern_id: str) -> None:
        live = self.get(name)
        with live.writing:
            if live.deleted:
                raise MemoryNotFound(name)
            if not live.has(pattern_id):
                raise PatternNotFound(name, pattern_id)
            self.storage.delete_pattern(live.record.id, pattern_id)
            with live.rw.write():
                live.remove(pattern_id)

    # --- training ---------------------------------------------------------------------
    def train(self, live: LiveMemory, epochs: int | None) -> dict[str, Any]:
        """Start a background training job for ``live``; returns the job's state."""
        if not live.trainable:
            raise NotTrainable(
                f"memory {live.name!r} is of kind {live.kind}, which learns each "
                "pattern when it is stored: there is nothing to train"
            )
        with live.writing:
            if live.deleted:
                raise MemoryNotFound(live.name)
            if live.count == 0:
                raise MemoryEmpty(f"memory {live.name!r} is empty: store {live.items} first")
            try:
                work, patterns, total = live.training(self.storage, epochs)
                job = self.jobs.submit(
                    live.name, "train", work, patterns=patterns, epochs=total, on_finish=live.training_ended
                )
            except JobRunning as exc:
                live.training_ended("not started")
                raise JobRunning(
                    f"memory {live.name!r} is training already (job {exc.job_id})", exc.job_id
                ) from None
        return job.to_dict()


def _no_shape(cls: type[LiveMemory], shape: list[int] | None, text: bool) -> tuple[int, ...]:
    """A kind that stores no patterns takes neither a shape nor captions."""
    if shape or text:
        raise InvalidShape(f"a {cls.kind} memory stores {cls.items}, not patterns: leave out shape and text")
    return ()
