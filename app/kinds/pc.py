"""Kind "pc": a hierarchical predictive-coding memory (``memory_core.PCMemory``) with its
memory index (``memory_core.PCIndex``), trained in the background (``TrainedKind``).

Every recall says what it did (``RecallReport``): whether the output is the network's
reconstruction of a stored pattern (the index landed on it and the cue passed the
stored-pattern test) or of something not stored, which stored pattern, and how far.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from memory_core import IndexRecall, PCConfig, PCIndexConfig, PCMemory

from ..text_memory import stored_dim
from .base import check_fields, check_keys
from .pc_model import PCModel, index_path
from .trained import TrainedKind

__all__ = ["PCKind"]

# Hidden width by the stored dimension D: 1024 fits 1000 images (measured at D = 784 and 3072)
# closely enough for the index to land on each, and trains them in minutes on two cores;
# training time grows with D x width, so 512 above D = 4096 (results/pc_service.md).
WIDE_UP_TO = 4096
TOP, WIDE, NARROW = 256, 1024, 512


def _resolve_index(value: Any) -> dict[str, Any] | bool:
    """``config.index``: true (default settings), false (the paper's pure recall) or an object
    of ``PCIndexConfig`` fields; resolved to false or the full object."""
    if value is False:
        return False
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise TypeError(f"config.index must be true, false or an object of index settings, got {value!r}")
    known = [f.name for f in fields(PCIndexConfig)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown config.index key(s) {unknown}; known: {known}")
    try:
        return asdict(PCIndexConfig(**value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config.index: {exc}") from None


class PCKind(TrainedKind):
    """A hierarchical predictive-coding memory (``memory_core.PCMemory``) and its index.

    Config keys are ``PCConfig``'s fields (PCMemory's constructor arguments): ``sizes``
    (top latent ... sensory; the last must be the stored dimension: D, or D + 384 in a
    text memory; default [256, 1024, D], [256, 512, D] above D = 4096), ``activation``,
    ``seed``, ``epochs``, ...; and ``index``: the memory index (default on; false = the
    paper's pure recall; an object sets ``PCIndexConfig``'s fields).
    """

    kind = "pc"
    model_class = PCModel

    @classmethod
    def default_sizes(cls, dim: int) -> list[int]:
        return [TOP, WIDE if dim <= WIDE_UP_TO else NARROW, dim]

    @classmethod
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        dim = stored_dim(shape, text)
        check_keys(cls.kind, config, [f.name for f in fields(PCConfig)] + ["index"])
        network = {k: v for k, v in config.items() if k != "index"}
        check_fields(network, PCConfig)
        resolved = {**asdict(PCConfig()), "sizes": cls.default_sizes(dim), **network}
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
        # plain JSON types, as stored
        return {**json.loads(checked.to_json()), "index": _resolve_index(config.get("index", True))}

    @classmethod
    def stored_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        # Memories created before the index existed keep the recall they were created with.
        return config if "index" in config else {**config, "index": False}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        resolved = cls.resolve_config({}, (1,))
        resolved["sizes"] = [TOP, f"{WIDE} if D <= {WIDE_UP_TO} else {NARROW}", "D"]  # the memory's own D
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

    @property
    def _index_config(self) -> PCIndexConfig | None:
        index = self.record.config.get("index", False)
        return PCIndexConfig(**index) if index else None

    def _new_model(self) -> PCModel:
        network = {k: v for k, v in self.record.config.items() if k != "index"}
        return PCModel(PCMemory(device=self.device, **network), self._index_config)

    def _training_copy(self, model: PCModel) -> PCModel:
        return model.for_training()

    def _fit(self, model: PCModel, patterns: Tensor, ids: list[str], epochs: int, callback) -> Any:
        return model.fit(patterns, ids, epochs=epochs, callback=callback)

    def _checkpoint_files(self, name: str) -> list[str]:
        return [name, index_path(name).name]

    def _load_model(self, path: Path) -> PCModel:
        model = PCModel.load(path, device=self.device)
        if (model.index is None) != (self._index_config is None):
            raise ValueError(f"{index_path(path).name}: the memory's config and its index files disagree")
        return model

    # --- recall ------------------------------------------------------------------------
    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        out, energy, _ = self._recall(cue, mask, steps)
        return out, energy

    def _recall(
        self, cue: Tensor, mask: Tensor | None, steps: int
    ) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
        model = self._trained_model()
        if model.index is None:  # the paper's pure recall
            out = self._retrieve(model.pc, cue, mask)
            return out, model.pc.energy(out), self._pure_reports(out)
        got = model.recall(cue, mask)
        return got.output, model.pc.energy(got.output), self._index_reports(got, model.ids)

    def _mse_to_stored(self, out: Tensor, pattern_ids: list[str]) -> list[float | None]:
        """Per cue, the MSE between its output (B, D') and the stored pattern of that id, over
        the pattern part (D); None for an id deleted since training."""
        dim, keys = self.record.dim, self.index.keys
        rows = [self._rows.get(pid) for pid in pattern_ids]
        present = [b for b, r in enumerate(rows) if r is not None]
        mse: list[float | None] = [None] * len(rows)
        if present:
            stored = keys[[rows[b] for b in present], :dim].to(out.dtype)
            values = (out[present, :dim] - stored).square().mean(1).tolist()
            for b, v in zip(present, values, strict=True):
                mse[b] = v
        return mse

    def _pure_reports(self, out: Tensor) -> list[dict[str, Any]]:
        """The pure recall's output is always the network's reconstruction; ``nearest`` is
        the stored pattern nearest to it."""
        rows = self.index.search(out, k=1)[1][:, 0].tolist()  # (B,)
        ids = [self.ids[r] for r in rows]
        return [
            {
                "index": False,
                "stored": False,
                "unique": False,
                "rounds": None,
                "nearest": {"id": pid, "mse": mse, "evidence": None},
            }
            for pid, mse in zip(ids, self._mse_to_stored(out, ids), strict=True)
        ]

    def _index_reports(self, got: IndexRecall, trained_ids: list[str]) -> list[dict[str, Any]]:
        ids = [trained_ids[r] for r in got.nearest.tolist()]
        mse = self._mse_to_stored(got.output, ids)
        evidence = got.evidence.float().cpu().tolist()
        return [
            {
                "index": True,
                "stored": stored,
                "unique": unique,
                "rounds": rounds,
                "nearest": {
                    "id": pid,
                    "mse": m,
                    "evidence": e if math.isfinite(e) else None,
                },
            }
            for pid, m, e, stored, unique, rounds in zip(
                ids,
                mse,
                evidence,
                got.stored.tolist(),
                got.unique.tolist(),
                got.rounds.tolist(),
                strict=True,
            )
        ]
