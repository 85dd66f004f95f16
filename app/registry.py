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
from typing import Any

import torch
from torch import Tensor

from .errors import ApiError
from .jobs import JobConflict, JobManager
from .kinds import KINDS, LiveMemory
from .settings import Settings
from .storage import MemoryExists, NewPattern, PatternExists, Storage

__all__ = ["Registry"]

log = logging.getLogger("app.registry")


def memory_not_found(name: str) -> ApiError:
    return ApiError(404, "memory_not_found", f"no memory named {name!r}")


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
        """Rebuild every memory from storage; returns how many patterns were loaded."""
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
            live = cls(record, self.device)
            with live.rw.write():
                for seqs, ids, vectors in self.storage.iter_vectors(record.id):
                    live.add(seqs, ids, torch.from_numpy(vectors))
                live.restore(self.storage)
            loaded += live.count
            with self._lock:
                self._memories[record.name] = live
            log.info("recovered memory %r (%s, %d patterns)", record.name, record.kind, live.count)
        return loaded

    def close(self) -> None:
        self.jobs.shutdown()

    # --- memories ---------------------------------------------------------------------
    def get(self, name: str) -> LiveMemory:
        with self._lock:
            live = self._memories.get(name)
        if live is None:
            raise memory_not_found(name)
        return live

    def all(self) -> list[LiveMemory]:
        with self._lock:
            return sorted(self._memories.values(), key=lambda m: m.record.id)

    def create(
        self, name: str, kind: str, shape: list[int], text: bool, config: dict[str, Any]
    ) -> LiveMemory:
        """Validate and create a memory (durable on return)."""
        cls = KINDS.get(kind)
        if cls is None:
            raise ApiError(
                422, "unknown_kind", f"unknown kind {kind!r}; this service has: {', '.join(KINDS)}"
            )
        shape_t = self._check_shape(shape)
        try:
            resolved = cls.resolve_config(dict(config), shape_t, text)
        except (ValueError, TypeError) as exc:
            raise ApiError(422, "invalid_config", str(exc)) from None
        with self._creating:
            with self._lock:
                taken, held = name in self._memories, len(self._memories)
            if taken:
                raise ApiError(409, "memory_exists", f"a memory named {name!r} exists already")
            if held >= self.settings.max_memories:
                raise ApiError(
                    409,
                    "too_many_memories",
                    f"the service holds {self.settings.max_memories} memories already (AMS_MAX_MEMORIES)",
                )
            try:
                record = self.storage.create_memory(name, kind, shape_t, text, resolved)
            except MemoryExists:
                raise ApiError(409, "memory_exists", f"a memory named {name!r} exists already") from None
            live = cls(record, self.device)
            with self._lock:
                self._memories[name] = live
        return live

    def _check_shape(self, shape: list[int]) -> tuple[int, ...]:
        if len(shape) not in (1, 3) or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ApiError(
                422, "invalid_shape", f"shape must be [D] or [C, H, W] of positive integers, got {shape}"
            )
        if len(shape) == 3 and shape[0] not in (1, 3):
            raise ApiError(
                422, "invalid_shape", f"an image memory has C = 1 (grey) or 3 (RGB) channels, got {shape[0]}"
            )
        dim = 1
        for s in shape:
            dim *= s
        if dim > self.settings.max_dim:
            raise ApiError(
                422,
                "dimension_too_large",
                f"shape {shape} has D = {dim}; the limit is {self.settings.max_dim} (AMS_MAX_DIM)",
            )
        return tuple(shape)

    def delete(self, name: str) -> None:
        """Delete a memory and its data (its running job is cancelled first)."""
        live = self.get(name)
        self.jobs.cancel_memory(name, wait=30.0)
        with live.writing:
            if live.deleted:
                raise memory_not_found(name)
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
                raise memory_not_found(name)
            taken = [p.id for p in patterns if live.has(p.id)]
            if taken:
                raise ApiError(
                    409,
                    "pattern_exists",
                    f"pattern id(s) exist already in {name!r}: {taken[:10]}",
                    {"ids": taken},
                )
            try:
                seqs = self.storage.add_patterns(live.record.id, patterns)
            except PatternExists as exc:  # storage and RAM disagree: should not happen
                raise ApiError(409, "pattern_exists", f"pattern id {exc.args[0]!r} exists already") from None
            ids = [p.id for p in patterns]
            with live.rw.write():
                live.add(seqs, ids, vectors)
                count = live.count
        return ids, count

    def delete_pattern(self, name: str, pattern_id: str) -> None:
        live = self.get(name)
        with live.writing:
            if live.deleted:
                raise memory_not_found(name)
            if not live.has(pattern_id):
                raise ApiError(404, "pattern_not_found", f"no pattern {pattern_id!r} in memory {name!r}")
            self.storage.delete_pattern(live.record.id, pattern_id)
            with live.rw.write():
                live.remove(pattern_id)

    # --- training ---------------------------------------------------------------------
    def train(self, live: LiveMemory, epochs: int | None) -> dict[str, Any]:
        """Start a background training job for ``live``; returns the job's state."""
        if not live.trainable:
            raise ApiError(
                422,
                "not_trainable",
                f"memory {live.name!r} is of kind {live.kind}, which learns each "
                "pattern when it is stored: there is nothing to train",
            )
        with live.writing:
            if live.deleted:
                raise memory_not_found(live.name)
            if live.count == 0:
                raise ApiError(409, "memory_empty", f"memory {live.name!r} is empty: store patterns first")
            try:
                work, patterns, total = live.training(self.storage, epochs)
                job = self.jobs.submit(
                    live.name, "train", work, patterns=patterns, epochs=total, on_finish=live.training_ended
                )
            except JobConflict as exc:
                live.training_ended("not started")
                raise ApiError(
                    409,
                    "job_running",
                    f"memory {live.name!r} is training already (job {exc.args[0]})",
                    {"job": exc.args[0]},
                ) from None
        return job.to_dict()
