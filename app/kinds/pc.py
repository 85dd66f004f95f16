"""Kind "pc": a hierarchical predictive-coding memory (``memory_core.PCMemory``), trained in
the background (``TrainedKind``)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, ClassVar

from memory_core import PCConfig, PCMemory

from ..text_memory import stored_dim
from .base import check_keys
from .trained import TrainedKind

__all__ = ["PCKind"]


class PCKind(TrainedKind):
    """A hierarchical predictive-coding memory (``memory_core.PCMemory``).

    Config keys are ``PCConfig``'s fields (PCMemory's constructor arguments): ``sizes``
    (top latent ... sensory; the last must be the stored dimension: D, or D + 384 in a
    text memory; default [256, 512, D]), ``activation``, ``seed``, ``epochs``, ...
    """

    kind = "pc"
    model_class = PCMemory
    DEFAULT_HIDDEN: ClassVar[tuple[int, int]] = (256, 512)

    @classmethod
    def resolve_config(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False) -> dict[str, Any]:
        dim = stored_dim(shape, text)
        check_keys(cls.kind, config, [f.name for f in fields(PCConfig)])
        resolved = {**asdict(PCConfig()), "sizes": [*cls.DEFAULT_HIDDEN, dim], **config}
        sizes = resolved["sizes"]
        if not isinstance(sizes, list) or any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise TypeError(f"config.sizes must be a list of integers, got {sizes!r}")
        if not sizes or sizes[-1] != dim:
            raise ValueError(
                f"config.sizes must end with the pattern dimension {dim}"
                f"{' (D + 384 for the caption)' if text else ''}, got {sizes}"
            )
        try:
            checked = PCConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: {exc}") from None
        return json.loads(checked.to_json())  # plain JSON types, as stored

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        resolved = cls.resolve_config({}, (1,))
        resolved["sizes"] = [*cls.DEFAULT_HIDDEN, "D"]  # the memory's own dimension
        return resolved

    def _new_model(self) -> PCMemory:
        return PCMemory(device=self.device, **self.record.config)
