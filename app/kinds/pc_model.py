"""``PCModel``: what kind "pc" trains, saves, loads and recalls with.

A ``PCMemory`` and, unless the memory's config turns it off (``"index": false``), its
``PCIndex`` over the patterns the network was fit on, with those patterns' ids (the
index's rows). Two files, written before the job's switch-over: the network's checkpoint
``pc-<token>.safetensors`` and beside it the index, ``pc-<token>.index.safetensors``;
``load`` reads both (the index when its file is there), so whatever loads the
kind's checkpoint (a restart, a replica) gets the same recall.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor

from memory_core import FitHistory, IndexRecall, PCIndex, PCIndexConfig, PCMemory

__all__ = ["PCModel", "index_path"]


def index_path(checkpoint: str | os.PathLike) -> Path:
    """The index file beside a checkpoint: ``pc-x.safetensors`` -> ``pc-x.index.safetensors``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.index{path.suffix}")


class PCModel:
    """A trained or untrained ``PCMemory`` and its memory index.

    Arguments:
        pc: the network.
        index_config: the index's settings; None = no index (the paper's pure recall).

    Attributes:
        index: the ``PCIndex`` over the patterns of the last ``fit`` (None before, or
            without an index).
        ids: the id of each of the index's rows (the patterns the network was fit on).
    """

    def __init__(self, pc: PCMemory, index_config: PCIndexConfig | None) -> None:
        self.pc = pc
        self.index_config = index_config
        self.index: PCIndex | None = None
        self.ids: list[str] = []

    def for_training(self) -> PCModel:
        """A copy of the network to train on (the index belongs to the old weights: not copied)."""
        return PCModel(copy.deepcopy(self.pc), self.index_config)

    def fit(
        self,
        patterns: Tensor,
        ids: list[str],
        epochs: int | None = None,
        callback: Callable[[dict], bool | None] | None = None,
    ) -> FitHistory:
        """Fit the network on ``patterns`` (N, D) (their ``ids``), then build the index from
        the stored codes fit inferred anyway (no second relaxation of the set); a fit the
        callback stopped builds nothing."""
        self.index, self.ids = None, []
        history = self.pc.fit(patterns, epochs=epochs, progress=False, callback=callback)
        if self.index_config is not None and history.stopped != "callback":
            self.index = PCIndex(self.pc, self.index_config)
            self.index.build(patterns, codes=history.codes)
            self.ids = list(ids)
        history.codes = None  # (N, n_l) per layer: kept by the index, not by the job
        return history

    def recall(self, cue: Tensor, mask: Tensor | None) -> IndexRecall:
        """``PCIndex.recall`` for cues (B, D); rows of ``mask`` (B, D) that are all True are
        whole (noisy) cues, the others partial ones. Needs the index."""
        assert self.index is not None
        whole = None if mask is None else mask.all(dim=1)  # (B,)
        if whole is None or bool(whole.all()):
            return self.index.recall(cue)
        if not bool(whole.any()):
            return self.index.recall(cue, mask=mask)
        parts = (self.index.recall(cue[whole]), self.index.recall(cue[~whole], mask=mask[~whole]))
        merged = {}
        for f in fields(IndexRecall):
            a, b = getattr(parts[0], f.name), getattr(parts[1], f.name)
            out = torch.empty((cue.shape[0], *a.shape[1:]), dtype=a.dtype, device=a.device)
            out[whole], out[~whole] = a, b
            merged[f.name] = out
        return IndexRecall(**merged)

    def save(self, path: str | os.PathLike) -> None:
        """The index file first, then the network's checkpoint (each atomic)."""
        if self.index is not None:
            self.index.save(index_path(path), metadata={"ids": json.dumps(self.ids)})
        self.pc.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> PCModel:
        """Read a checkpoint written by ``save`` (and its index when its file is there);
        ValueError for files that are not ones, or an index that belongs to another model."""
        pc = PCMemory.load(path, device=device)
        model = cls(pc, None)
        file = index_path(path)
        if file.exists():
            model.index = PCIndex.load(file, pc)
            model.index_config = model.index.config
            try:
                model.ids = json.loads(model.index.metadata["ids"])
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{file}: the index names no pattern ids ({exc})") from None
            if not (isinstance(model.ids, list) and len(model.ids) == len(model.index)):
                raise ValueError(f"{file}: {len(model.index)} indexed patterns, ids do not match")
        return model
