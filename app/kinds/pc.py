"""Kind "pc": a hierarchical predictive-coding memory (``memory_core.PCMemory``), trained in
the background (``TrainedKind``)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, ClassVar

from memory_core import PCConfig, PCMemory

from ..text_memory import stored_dim
from .base import check_fields, check_keys
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
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        dim = stored_dim(shape, text)
        check_keys(cls.kind, config, [f.name for f in fields(PCConfig)])
        check_fields(config, PCConfig)
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
            checked = PCConfig.from_dict(
                {k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items()}
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: {exc}") from None
        return json.loads(checked.to_json())  # plain JSON types, as stored

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        resolved = cls.resolve_config({}, (1,))
        resolved["sizes"] = [*cls.DEFAULT_HIDDEN, "D"]  # the memory's own dimension
        return resolved

    # Bytes per float32 parameter: the weights, Adam's two moments and recall's cached copies
    # (a model in RAM); its gradients and a second model (a training job's copy).
    _MODEL_COPIES, _TRAINING_COPIES = 5, 6
    # Floats per unit of every layer per cue that relaxation keeps (states, errors, f, f',
    # gradients, momenta, the last accepted state; conjugate gradients' directions and trials).
    _RELAX_FLOATS = 16

    @staticmethod
    def _parameters(sizes: list[int]) -> int:
        return sum(sizes[l] * sizes[l - 1] + sizes[l] for l in range(1, len(sizes))) + sizes[0]

    @classmethod
    def model_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool) -> int:
        return 4 * cls._MODEL_COPIES * cls._parameters(config["sizes"])

    @classmethod
    def recall_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, batch: int) -> int:
        return 4 * cls._RELAX_FLOATS * min(batch, config["max_batch"]) * sum(config["sizes"])

    @classmethod
    def training_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, patterns: int) -> int:
        batch = config["batch_size"] or min(64, max(8, patterns // 4))
        snapshot = 4 * patterns * stored_dim(shape, text)
        model = 4 * cls._TRAINING_COPIES * cls._parameters(config["sizes"])
        return snapshot + model + cls.recall_bytes(config, shape, text, max(batch, patterns))

    def _new_model(self) -> PCMemory:
        return PCMemory(device=self.device, **self.record.config)
