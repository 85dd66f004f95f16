"""Facts as index rows, and the look-up that filters known facts out of rankings.

A fact ``r(e_1, .., e_n)`` is the row ``[r, e_1, .., e_n, -1, .., -1]`` of width
``1 + max_arity`` (int64; -1 pads positions past the relation's arity).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["FactIndex", "FactStore"]


def _others(row: tuple[int, ...], position: int) -> tuple[int, ...]:
    return row[:position] + row[position + 1 :]


class FactIndex:
    """For each (relation, position, the other arguments): the entities known to fill it.

    Built from rows of facts (their padding is ignored); ``known(r, p, row)`` answers in O(1).
    """

    def __init__(self, rows: Iterable[tuple[int, ...]]):
        self._index: dict[tuple, list[int]] = {}
        for row in rows:
            rel, args = row[0], tuple(a for a in row[1:] if a >= 0)
            for p in range(len(args)):
                self._index.setdefault((rel, p, _others(args, p)), []).append(args[p])

    def known(self, relation: int, position: int, args: tuple[int, ...]) -> list[int]:
        """Entities e such that relation(args with e at position) is a known fact."""
        return self._index.get((relation, position, _others(args, position)), [])

    def mask(
        self, relations: Tensor, args: Tensor, arity: Tensor, position: int, num_entities: int
    ) -> Tensor:
        """(B, E) bool, True where the candidate completes a known fact.

        Arguments:
            relations: (B,) relation indices.
            args: (B, A) argument rows (the value at ``position`` is ignored).
            arity: (B,) each fact's arity.
            position: the argument being ranked.
        """
        rows, cols = [], []
        for b, (rel, row, n) in enumerate(zip(relations.tolist(), args.tolist(), arity.tolist())):
            hits = self.known(rel, position, tuple(row[:n]))
            rows.extend([b] * len(hits))
            cols.extend(hits)
        out = torch.zeros(len(relations), num_entities, dtype=torch.bool)
        if rows:
            out[torch.tensor(rows), torch.tensor(cols)] = True
        return out


class FactStore:
    """The memory's facts: a growable (N, 1 + A) int64 table without duplicates."""

    def __init__(self, max_arity: int = 2):
        self.max_arity = max_arity
        self.version = 0  # bumped by every change: keys caches of what the facts imply
        self._rows: list[tuple[int, ...]] = []  # unpadded: (r, e_1, .., e_n)
        self._seen: set[tuple[int, ...]] = set()
        self._table: Tensor | None = None
        self._index: FactIndex | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, row: tuple[int, ...]) -> bool:
        return tuple(row) in self._seen

    def add(self, rows: Iterable[tuple[int, ...]]) -> int:
        """Append the rows not stored yet (unpadded tuples); returns how many were new."""
        new = 0
        for row in rows:
            row = tuple(int(x) for x in row)
            if row not in self._seen:
                self._seen.add(row)
                self._rows.append(row)
                self.max_arity = max(self.max_arity, len(row) - 1)
                new += 1
        if new:
            self._changed()
        return new

    def remove(self, rows: Iterable[tuple[int, ...]]) -> int:
        """Drop the given rows (unpadded tuples) where stored; returns how many were."""
        gone = {tuple(int(x) for x in row) for row in rows} & self._seen
        if gone:
            self._seen -= gone
            self._rows = [row for row in self._rows if row not in gone]
            self._changed()
        return len(gone)

    def _changed(self) -> None:
        self._table, self._index = None, None
        self.version += 1

    def rows(self) -> list[tuple[int, ...]]:
        return list(self._rows)

    def table(self) -> Tensor:
        """(N, 1 + max_arity) int64, padded with -1; cached until the next ``add``."""
        width = 1 + self.max_arity
        if self._table is None or self._table.shape[1] != width:
            padded = [row + (-1,) * (width - len(row)) for row in self._rows]
            self._table = torch.tensor(padded, dtype=torch.long).view(len(padded), width)
        return self._table

    def index(self) -> FactIndex:
        if self._index is None:
            self._index = FactIndex(self._rows)
        return self._index
