"""What the service needs from durable storage, apart from any engine: the records it
reads and writes (``MemoryRecord``, ``NewPattern``, ``PatternRow``, ``Fact``, ``FactRow``)
and the ``Storage`` interface the registry, recovery and the kinds use.

``storage.py`` implements it on SQLite (and re-exports all of this); the Ray mode's shard
files (``cluster/storage.py``) are that same implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Fact", "FactRow", "MemoryRecord", "NewPattern", "PatternRow", "Storage"]


@dataclass(frozen=True)
class MemoryRecord:
    """A memory as stored: what it is, not what it holds.

    Attributes:
        id: storage key, never reused.
        name: unique name in the REST API.
        kind: "hopfield" or "pc".
        shape: (C, H, W) for image memories, (D,) for vector memories.
        text: True for cross-modal (image + caption) memories.
        config: the kind's resolved constructor arguments.
        created_at: unix seconds.
        extra: kind-specific persistent state (e.g. what a PC checkpoint has learned).
    """

    id: int
    name: str
    kind: str
    shape: tuple[int, ...]
    text: bool
    config: dict[str, Any]
    created_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """D = the product of the shape; 0 for a memory without one (relational: facts)."""
        return int(np.prod(self.shape)) if self.shape else 0


@dataclass(frozen=True)
class NewPattern:
    """A pattern to store: its id, vector (D,) float32, caption and metadata."""

    id: str
    vector: np.ndarray
    text: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class PatternRow:
    """A stored pattern; ``vector`` is None when a listing did not ask for it."""

    seq: int
    id: str
    text: str | None
    metadata: dict[str, Any] | None
    vector: np.ndarray | None = None


Fact = tuple[str, tuple[str, ...]]  # (relation, argument names)


@dataclass(frozen=True)
class FactRow:
    """A stored fact: its id (sequence number), relation and argument names."""

    seq: int
    relation: str
    args: tuple[str, ...]


class Storage(ABC):
    """What the service needs from durable storage. Every write is durable on return."""

    @abstractmethod
    def create_memory(
        self, name: str, kind: str, shape: tuple[int, ...], text: bool, config: dict[str, Any]
    ) -> MemoryRecord:
        """Create a memory; raises ``MemoryExists``."""

    @abstractmethod
    def delete_memory(self, memory_id: int) -> None:
        """Delete a memory, its patterns and its checkpoints."""

    @abstractmethod
    def list_memories(self) -> list[MemoryRecord]:
        """Every memory, in creation order."""

    @abstractmethod
    def set_extra(self, memory_id: int, extra: dict[str, Any]) -> None:
        """Replace a memory's kind-specific state."""

    @abstractmethod
    def add_patterns(self, memory_id: int, patterns: list[NewPattern]) -> list[int]:
        """Append patterns in one transaction; returns their sequence numbers.

        Raises ``PatternExists`` (and stores nothing) when an id is taken.
        """

    @abstractmethod
    def delete_pattern(self, memory_id: int, pattern_id: str) -> bool:
        """Delete one pattern; False when there was none."""

    @abstractmethod
    def get_pattern(self, memory_id: int, pattern_id: str) -> PatternRow | None:
        """One pattern with its vector, or None."""

    @abstractmethod
    def get_texts(self, memory_id: int, pattern_ids: list[str]) -> dict[str, str | None]:
        """Captions of these patterns by id (ids not stored are left out)."""

    @abstractmethod
    def page_patterns(self, memory_id: int, after_seq: int, limit: int) -> list[PatternRow]:
        """Up to ``limit`` patterns with seq > ``after_seq``, in storage order, without vectors."""

    @abstractmethod
    def iter_vectors(
        self, memory_id: int, batch: int = 4096, dim: int | None = None
    ) -> Iterator[tuple[list[int], list[str], np.ndarray]]:
        """All of a memory's patterns in storage order, as (seqs, ids, vectors (n, D)) batches;
        ``DamagedPattern`` for vectors of another length than ``dim`` (or each other's) or
        with non-finite numbers."""

    @abstractmethod
    def count_patterns(self, memory_id: int) -> int:
        """How many patterns a memory holds in storage."""

    @abstractmethod
    def add_facts(self, memory_id: int, facts: list[Fact]) -> tuple[list[int], int]:
        """Store facts in one transaction, each once (a fact stored already keeps its id);
        returns (the facts' ids in order, how many were new)."""

    @abstractmethod
    def delete_fact(self, memory_id: int, fact_id: int) -> Fact | None:
        """Delete one fact; the fact deleted, or None when there was none."""

    @abstractmethod
    def get_fact(self, memory_id: int, fact_id: int) -> FactRow | None:
        """One fact, or None."""

    @abstractmethod
    def page_facts(self, memory_id: int, after_seq: int, limit: int) -> list[FactRow]:
        """Up to ``limit`` facts with seq > ``after_seq``, in storage order."""

    @abstractmethod
    def checkpoint_dir(self, memory_id: int) -> Path:
        """A directory for this memory's checkpoints (created on demand)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files."""
