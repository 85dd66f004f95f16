"""Rebuilding the memories from storage on start, one at a time, each failure its memory's alone.

For every stored memory: its kind's class (``KINDS``), its config in today's form
(``stored_config``), its patterns (checked as they are read: ``DamagedPattern``), and its
kind-specific state (``restore``: checkpoints). Whatever goes wrong with one memory (a kind
this version does not serve, a config it refuses, a damaged pattern) puts a
``FailedMemory`` in its place, which says why; the other memories load and serve. A model
checkpoint that cannot be loaded is the memory's own, softer failure (``TrainedKind``:
recalls refused until it is trained again). Only damage to storage as a whole (an
unreadable database, ``StorageDamaged``) stops the start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from .kinds import KINDS, LiveMemory
from .kinds.failed import FailedMemory
from .storage import MemoryRecord, Storage
from .text_memory import stored_dim

if TYPE_CHECKING:
    from .budget import MemoryBudget

__all__ = ["load_memory", "load_stored", "recover_all"]

log = logging.getLogger("app.recovery")

# How a registry puts a stored memory of a kind in RAM (a cluster places it on its actors).
Loader = Callable[[type[LiveMemory], MemoryRecord], LiveMemory]


def load_stored(
    cls: type[LiveMemory], record: MemoryRecord, storage: Storage, device: torch.device
) -> LiveMemory:
    """A stored memory of kind ``cls`` in RAM again: its config in today's form, its patterns in
    storage order (checked as they are read), then its kind's state (checkpoints)."""
    live = cls(replace(record, config=cls.stored_config(record.config)), device)
    dim = stored_dim(record.shape, record.text)
    with live.rw.write():
        for seqs, ids, vectors in storage.iter_vectors(record.id, dim=dim):
            live.add(seqs, ids, torch.from_numpy(vectors))
        live.restore(storage)
    return live


def load_memory(
    record: MemoryRecord, storage: Storage, device: torch.device, load: Loader | None = None
) -> LiveMemory:
    """One memory rebuilt from storage (by ``load``, default ``load_stored``), or a
    ``FailedMemory`` saying why it could not be."""
    try:
        cls = KINDS.get(record.kind)
        if cls is None:  # written by a newer version: leave its data alone
            raise ValueError(
                f"kind {record.kind!r} is not served by this version (it has {', '.join(KINDS)})"
            )
        return load(cls, record) if load else load_stored(cls, record, storage, device)
    except Exception as exc:  # this memory's failure only (MemoryError included: it holds nothing now)
        reason = f"recovery failed: {type(exc).__name__}: {exc}"
        log.error("memory %r (%s): %s", record.name, record.kind, reason)
        try:
            count = storage.count_patterns(record.id)
        except Exception:  # storage itself failing is for recover_all's caller to see
            count = 0
        return FailedMemory(record, device, reason, count)


def recover_all(
    storage: Storage, device: torch.device, budget: MemoryBudget | None = None, load: Loader | None = None
) -> list[LiveMemory]:
    """Every stored memory, in creation order, rebuilt (or failed) one by one; a memory that
    would not fit the memory budget beside those loaded before it fails with that reason."""
    loaded: list[LiveMemory] = []
    held = 0  # bytes of the memories loaded so far
    for record in storage.list_memories():
        live = load_memory(record, storage, device, load)
        if budget is not None and budget.limit < held + live.resident_bytes():
            reason = (
                f"recovery failed: it needs {live.resident_bytes() >> 20} MiB, more than is left of the "
                f"memory budget of {budget.limit >> 20} MiB (AMS_MEMORY_BUDGET) beside the memories before it"
            )
            log.error("memory %r: %s", record.name, reason)
            live = FailedMemory(record, device, reason, live.count)
        held += live.resident_bytes()
        loaded.append(live)
        log.info("recovered memory %r (%s, %d patterns, %s)", live.name, live.kind, live.count, live.state)
    return loaded
