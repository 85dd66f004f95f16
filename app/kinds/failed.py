"""``FailedMemory``: what stands in for a memory that recovery could not rebuild.

A damaged record (a config this version refuses, a kind it does not serve) or damaged
stored patterns (a wrong length, NaN) make recovery put one of these in the memory's
place, holding no tensors: the memory is listed with state "failed" and the reason,
its patterns can still be listed and read from storage, it can be deleted, and every
other call answers 409 ``memory_failed`` with the reason (``Registry.get``). The other
memories are not affected.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from memory_core import UniversalHopfield

from ..exceptions import MemoryFailed
from ..storage import MemoryRecord
from .base import LiveMemory

__all__ = ["FailedMemory"]


class FailedMemory(LiveMemory):
    """A memory that failed recovery (see the module docstring).

    Arguments:
        record: its stored record, as read.
        device: unused (it holds no tensors).
        reason: why it failed, for people.
        count: how many patterns storage holds for it.
    """

    kind = "failed"  # replaced per instance by the record's kind

    def __init__(self, record: MemoryRecord, device: torch.device, reason: str, count: int) -> None:
        super().__init__(record, device)
        self.kind = record.kind  # type: ignore[misc]  # the kind it was stored as
        self._reason, self._stored = reason, count

    @classmethod
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        raise ValueError("a failed memory is never created")

    @property
    def failure(self) -> str:
        return self._reason

    @property
    def state(self) -> str:
        return "failed"

    @property
    def count(self) -> int:
        return self._stored

    @property
    def trained_count(self) -> int:
        return 0

    @property
    def index(self) -> UniversalHopfield:
        raise MemoryFailed(self.name, self._reason)

    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        raise MemoryFailed(self.name, self._reason)

    def nbytes(self) -> int:
        return 0

    def resident_bytes(self) -> int:
        return 0
