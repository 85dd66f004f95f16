"""Kind "hopfield": a universal Hopfield network; a store is learned at once, nothing to train."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from memory_core import HopfieldConfig, UniversalHopfield

from ..storage import MemoryRecord
from .base import LiveMemory, check_fields, check_finite, check_keys, check_number

__all__ = ["HopfieldMemory"]


class HopfieldMemory(LiveMemory):
    """A universal Hopfield network (``memory_core.UniversalHopfield``): a store is learned at once.

    Config keys are UniversalHopfield's constructor arguments: similarity, separation,
    beta, n, k, radius. ``{}`` resolves to the library's defaults (``HopfieldConfig``:
    mask-aware euclidean similarity, softmax at beta = 100), chosen from the capacity
    experiment (scripts/capacity.py) and the beta sweep of scripts/measure_default_beta.py
    (see the README).
    """

    kind = "hopfield"
    DEFAULTS: ClassVar[dict[str, Any]] = asdict(HopfieldConfig())

    def __init__(self, record: MemoryRecord, device: torch.device) -> None:
        super().__init__(record, device)
        self.model = UniversalHopfield(**record.config, device=device)

    @classmethod
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        check_keys(cls.kind, config, [f.name for f in fields(HopfieldConfig)])
        check_fields(config, HopfieldConfig)
        resolved = {**cls.DEFAULTS, **config}
        for key in ("similarity", "separation"):
            if not isinstance(resolved[key], str):
                raise TypeError(f"config.{key} must be a string, got {resolved[key]!r}")
        for key in ("beta", "n", "radius"):
            check_number(key, resolved[key])
            resolved[key] = float(resolved[key])
        check_number("k", resolved["k"], integer=True)
        HopfieldConfig(**resolved)  # ValueError naming the known similarities / separations
        return resolved

    @property
    def index(self) -> UniversalHopfield:
        return self.model

    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        out = self.model.retrieve(cue, mask=mask, steps=steps)  # (B, D)
        check_finite(out)  # before its energy, which refuses NaN
        return out, self.model.energy(out)  # (B,)
