"""The live memories in RAM, kept in step with durable storage, and their jobs.

Every write goes to storage first (durable on return) and then to RAM, under the
memory's ``writing`` lock so that storage and RAM see the same order; RAM changes
take the memory's ``rw`` write lock so that recalls never see half a change. On
start, ``recover`` rebuilds every memory from storage (recovery.py: a memory that
fails is marked failed, the others serve). All methods block: call them from worker
threads, never from the event loop.

Limits, the same for every kind: a config is validated at create (its kind's
``resolve_config``, then the service's caps on epochs and solver steps: ``check_caps``);
what a memory's model, a store and a training job take is checked against the memory
budget (budget.py) before it is spent, from the kind's ``model_bytes``,
``training_bytes`` and ``recall_bytes``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .budget import MemoryBudget
from .exceptions import (
    ApiError,
    DimensionTooLarge,
    InvalidConfig,
    InvalidShape,
    JobRunning,
    MemoryEmpty,
    MemoryExists,
    MemoryFailed,
    MemoryNotFound,
    NotTrainable,
    PatternExists,
    PatternNotFound,
    TooManyMemories,
)
from .jobs import JobManager
from .kinds import LiveMemory, kind_class
from .kinds.base import check_caps
from .kinds.failed import FailedMemory
from .recovery import load_stored, recover_all
from .settings import Settings
from .storage import MemoryRecord, NewPattern, Storage
from .text_memory import stored_dim

__all__ = ["Registry"]

log = logging.getLogger("app.registry")


class Registry:
    """The memories the service holds.

    Arguments:
        storage: where memories and patterns are kept.
        device: where tensors live.
        settings: limits and job settings.
        budget: the memory budget (default: none to speak of, for tests of the registry alone).
    """

    def __init__(
        self, storage: Storage, device: torch.device, settings: Settings, budget: MemoryBudget | None = None
    ) -> None:
        self.storage = storage
        self.device = device
        self.settings = settings
        self.budget = budget or MemoryBudget(1 << 62)
        self.budget.attach(self.resident_bytes)
        self.jobs = JobManager(workers=settings.train_workers, keep=settings.jobs_kept)
        self._memories: dict[str, LiveMemory] = {}
        self._lock = threading.Lock()  # the dict only: held for moments, never across I/O
        self._creating = threading.Lock()  # one create at a time (name check + durable insert)

    # --- start ---------------------------------------------------------------------
    def recover(self) -> int:
        """Rebuild every memory from storage (recovery.py); returns how many patterns were loaded."""
        memories = recover_all(self.storage, self.device, self.budget, load=self._load)
        with self._lock:
            self._memories.update((live.name, live) for live in memories)
        return sum(live.count for live in memories if not isinstance(live, FailedMemory))

    def resident_bytes(self) -> int:
        """Bytes the memories hold in RAM now (the budget's resident part)."""
        with self._lock:
            memories = list(self._memories.values())
        return sum(live.resident_bytes() for live in memories)

    @staticmethod
    def job_key(live: LiveMemory) -> str:
        """What the job manager counts a memory's jobs by: its storage id, never reused."""
        return f"memory-{live.record.id}"

    def _load(self, cls: type[LiveMemory], record: MemoryRecord) -> LiveMemory:
        """A stored memory in RAM again: its patterns in storage order (checked), then its
        kind's state; what goes wrong makes it a failed memory (recovery.py)."""
        return load_stored(cls, record, self.storage, self.device)

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
    def get(self, name: str, allow_failed: bool = False) -> LiveMemory:
        """The memory of this name; ``MemoryNotFound``, or ``MemoryFailed`` for one that failed
        recovery unless ``allow_failed`` (details, listings of its stored patterns, delete)."""
        with self._lock:
            live = self._memories.get(name)
        if live is None:
            raise MemoryNotFound(name)
        if isinstance(live, FailedMemory) and not allow_failed:
            raise MemoryFailed(name, live.failure)
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
            check_caps(resolved, self.settings.max_epochs, self.settings.max_solver_steps)
        except (ValueError, TypeError) as exc:
            raise InvalidConfig(str(exc)) from None
        batch = self.settings.recall_batch_max
        needed = (
            cls.model_bytes(resolved, shape_t, text)
            + cls.training_bytes(resolved, shape_t, text, 0)
            + cls.recall_bytes(resolved, shape_t, text, batch)
        )
        self.budget.check(needed, f"a {kind} memory of shape {list(shape_t)} with this config")
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
        """Delete a memory and its data, and cancel its job; returns at once (the job stops at
        its next step and, its memory gone, keeps nothing: ``TrainedKind._switch_to``)."""
        live = self.get(name, allow_failed=True)
        with live.writing:  # a train start holds it too: no job can start after this cancel
            if live.deleted:
                raise MemoryNotFound(name)
            self.storage.delete_memory(live.record.id)
            live.deleted = True
            with self._lock:
                if self._memories.get(name) is live:
                    del self._memories[name]
            self.jobs.cancel_memory(self.job_key(live))
        self.budget.changed()

    # --- patterns ---------------------------------------------------------------------
    @contextmanager
    def storing(self, live: LiveMemory, count: int) -> Iterator[None]:
        """Reserve what storing ``count`` patterns into ``live`` takes while it runs: the decoded
        vectors and their copies on the way to storage and the index, and the index's growth
        (a store rebuilds the index: all its rows are copied once)."""
        rows = stored_dim(live.record.shape, live.record.text) * 4  # bytes per stored pattern
        with self.budget.reserve(
            rows * (4 * count + live.count), f"storing {count} patterns in {live.name!r}"
        ):
            yield

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
        self.budget.changed()

    # --- training ---------------------------------------------------------------------
    def train(self, live: LiveMemory, epochs: int | None) -> dict[str, Any]:
        """Start a background training job for ``live``; returns the job's state. The job's
        working set is held against the memory budget until it ends."""
        if not live.trainable:
            raise NotTrainable(
                f"memory {live.name!r} is of kind {live.kind}, which learns each "
                "pattern when it is stored: there is nothing to train"
            )
        if epochs is not None and epochs > self.settings.max_epochs:
            raise ApiError(
                422,
                "epochs_too_large",
                f"epochs = {epochs} is over AMS_MAX_EPOCHS = {self.settings.max_epochs}",
            )
        with live.writing:
            if live.deleted:
                raise MemoryNotFound(live.name)
            if live.count == 0:
                raise MemoryEmpty(f"memory {live.name!r} is empty: store {live.items} first")
            r = live.record
            key = self.job_key(live)
            if self.jobs.active(key):  # before reserving: a second job is refused, not queued
                raise JobRunning(f"memory {live.name!r} is training already", self.jobs.active(key) or "")
            needed = live.training_bytes(r.config, r.shape, r.text, live.count)
            reservation = self.budget.hold(needed, f"training memory {live.name!r} on {live.count} patterns")

            def ended(status: str) -> None:
                reservation.release()
                live.training_ended(status)

            try:
                work, patterns, total = live.training(self.storage, epochs)
            except BaseException:
                reservation.release()
                raise
            try:
                job = self.jobs.submit(
                    live.name, "train", work, patterns=patterns, epochs=total, on_finish=ended, key=key
                )
            except BaseException as exc:
                ended("not started")
                if isinstance(exc, JobRunning):
                    raise JobRunning(
                        f"memory {live.name!r} is training already (job {exc.job_id})", exc.job_id
                    ) from None
                raise
        return job.to_dict()


def _no_shape(cls: type[LiveMemory], shape: list[int] | None, text: bool) -> tuple[int, ...]:
    """A kind that stores no patterns takes neither a shape nor captions."""
    if shape or text:
        raise InvalidShape(f"a {cls.kind} memory stores {cls.items}, not patterns: leave out shape and text")
    return ()
