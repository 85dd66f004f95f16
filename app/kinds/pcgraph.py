"""Kind "pcgraph": predictive coding on a graph (``memory_core.PCGraph``), trained in the
background (``TrainedKind``)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, ClassVar

from memory_core import PCGraph, PCGraphConfig
from memory_core.pcgraph import upgrade_keys

from ..text_memory import stored_dim
from .base import check_fields, check_keys
from .trained import TrainedKind

__all__ = ["PCGraphKind"]


class PCGraphKind(TrainedKind):
    """Predictive coding on a graph (``memory_core.PCGraph``): the pattern's entries are the
    sensory vertices, plus ``hidden`` hidden vertices wired by ``topology``.

    Config keys are ``PCGraphConfig``'s fields but ``dim`` (the stored dimension): ``hidden``,
    ``topology`` (fully_connected, layered, random; a custom adjacency is Python-only),
    ``density``, ``activation``, ``epochs``, ... The weights are a dense N x N matrix over
    all N vertices, so N is capped at MAX_VERTICES.
    """

    kind = "pcgraph"
    model_class = PCGraph
    MAX_VERTICES: ClassVar[int] = 8192  # 8192^2 float32 weights = 256 MiB

    @classmethod
    def stored_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        return upgrade_keys(config)  # PCGraphConfig's keys before it took PCMemory's names

    @classmethod
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        allowed = [f.name for f in fields(PCGraphConfig) if f.name != "dim"]
        config = upgrade_keys(config)  # the old names of knobs (LEGACY_KEYS) too
        check_keys(cls.kind, config, allowed)
        check_fields(config, PCGraphConfig)
        resolved = {**asdict(PCGraphConfig(dim=1)), **config, "dim": stored_dim(shape, text)}
        if resolved["topology"] == "custom":
            raise ValueError("topology 'custom' needs an adjacency, which only the Python API takes")
        try:
            checked = PCGraphConfig.from_dict(resolved)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: {exc}") from None
        if checked.n_vertices > cls.MAX_VERTICES:
            raise ValueError(
                f"a graph of {checked.n_vertices} vertices (D = {checked.dim} sensory + hidden) is over "
                f"{cls.MAX_VERTICES}: its dense weights would take {4 * checked.n_vertices**2 / 2**30:.1f} GiB"
            )
        out = asdict(checked)
        del out["dim"]  # the memory's shape says it
        return json.loads(json.dumps(out))

    # Bytes per vertex pair: float32 weights, Adam's two moments and the edge mask (4 each)
    # and the bool adjacency (a model in RAM); a training job adds its copy of all that, the
    # gradients (4) and the float64 draw of fresh weights (8).
    _MODEL_BYTES_PER_PAIR, _TRAINING_BYTES_PER_PAIR = 17, 29
    _RELAX_FLOATS = 8  # floats per vertex per cue that inference keeps (state, f, f', errors, ...)

    @classmethod
    def _vertices(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool) -> int:
        return PCGraphConfig.from_dict({**config, "dim": stored_dim(shape, text)}).n_vertices

    @classmethod
    def model_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool) -> int:
        return cls._MODEL_BYTES_PER_PAIR * cls._vertices(config, shape, text) ** 2

    @classmethod
    def recall_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, batch: int) -> int:
        return 4 * cls._RELAX_FLOATS * batch * cls._vertices(config, shape, text)

    @classmethod
    def training_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, patterns: int) -> int:
        n = cls._vertices(config, shape, text)
        snapshot = 4 * patterns * stored_dim(shape, text)
        batch = min(patterns, PCGraphConfig.from_dict({**config, "dim": 1}).batch_size) if patterns else 1
        return snapshot + cls._TRAINING_BYTES_PER_PAIR * n * n + cls.recall_bytes(config, shape, text, batch)

    def _new_model(self) -> PCGraph:
        dim = stored_dim(self.record.shape, self.record.text)
        config = PCGraphConfig.from_dict({**self.record.config, "dim": dim})  # old key names too
        return PCGraph(**asdict(config), device=self.device)
