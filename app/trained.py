"""The trained kinds: predictive-coding memories that learn in background jobs.

``TrainedKind`` holds what they share: a store is durable at once and does not train;
``POST .../train`` starts a job that fits a copy of the current model (a warm start
when there is one) on a snapshot of the stored patterns, writes its checkpoint
atomically, records it in storage (the switch-over point) and only then swaps it in.
Recalls always use a whole model, the last trained one; a cancelled or failed job
changes nothing.

State: ``untrained`` (no model yet), ``training`` (a job is queued or running),
``ready`` (the model was fit on exactly the patterns stored now), ``stale`` (patterns
were stored or deleted since).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import secrets
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from memory_core import PCConfig, PCGraph, PCGraphConfig, PCMemory, UniversalHopfield
from memory_core.pcgraph import upgrade_keys
from memory_core.text import EMBEDDING_DIM

from .jobs import JobContext
from .kinds import LiveMemory, NotTrained
from .storage import MemoryRecord, Storage

__all__ = ["PCGraphKind", "PCKind", "TrainedKind"]

log = logging.getLogger("app.trained")


def _fingerprint(seqs: list[int]) -> str:
    """Names a set of stored patterns (their storage sequence numbers, in order)."""
    return hashlib.sha256(",".join(map(str, seqs)).encode()).hexdigest()[:20]


def _stored_dim(shape: tuple[int, ...], text: bool) -> int:
    """Length of a stored vector: D, plus the caption embedding in a text memory."""
    return int(math.prod(shape)) + (EMBEDDING_DIM if text else 0)


def _check_keys(kind: str, config: dict[str, Any], allowed: list[str]) -> None:
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for kind {kind}; known: {allowed}")


class TrainedKind(LiveMemory):
    """A memory whose recall model is learned by a background job (see the module docstring)."""

    trainable = True
    model_class: ClassVar[Any]  # PCMemory or PCGraph: fit / retrieve / energy / save / load

    def __init__(self, record: MemoryRecord, device: torch.device) -> None:
        super().__init__(record, device)
        # Names which stored pattern a recall lands on (and ranks caption queries).
        self._index = UniversalHopfield("euclidean", "max", device=device)
        self.model: Any = None
        self._trained_fingerprint: str | None = None
        self._trained_count = 0
        self._fingerprint = _fingerprint([])
        self._training = False
        self._checkpoint: str | None = None

    @abstractmethod
    def _new_model(self) -> Any:
        """A fresh, untrained model from the memory's config."""

    @property
    def index(self) -> UniversalHopfield:
        return self._index

    @property
    def state(self) -> str:
        if self._training:
            return "training"
        if self.model is None:
            return "untrained"
        return "ready" if self._trained_fingerprint == self._fingerprint else "stale"

    @property
    def trained_count(self) -> int:
        return self._trained_count

    def _changed(self) -> None:
        self._fingerprint = _fingerprint(self.seqs)

    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        model = self.model
        if model is None:
            raise NotTrained(f"memory {self.name!r} has no trained model yet: POST .../train first")
        if mask is None:
            out = model.retrieve(cue)  # (B, D): recall from noisy cues
        else:
            # A batch may mix cues with unknown entries (completion) and whole cues (an
            # all-True row: denoising, as without a mask).
            whole = mask.all(dim=1)  # (B,)
            out = torch.empty_like(cue)
            if bool(whole.any()):
                out[whole] = model.retrieve(cue[whole])
            if not bool(whole.all()):
                out[~whole] = model.retrieve(cue[~whole], mask=mask[~whole])
        return out, model.energy(out)  # (B, D), (B,)

    def training(
        self, storage: Storage, epochs: int | None
    ) -> tuple[Callable[[JobContext], None], int, int | None]:
        # A snapshot of what is stored now: the job trains on exactly this.
        patterns = self.index.keys.detach().to("cpu", torch.float32).clone()  # (N, D)
        fingerprint, start = self._fingerprint, self.model
        total = int(epochs if epochs is not None else self.record.config["epochs"])
        self._training = True

        def work(ctx: JobContext) -> None:
            # A copy: recalls keep using the current model until the new one is whole.
            model = copy.deepcopy(start) if start is not None else self._new_model()
            model.fit(
                patterns.to(self.device),
                epochs=total,
                progress=False,
                callback=lambda info: ctx.report(info["epoch"], info["epochs"], info["energy"]),
            )
            if ctx.cancelled:
                return
            folder = storage.checkpoint_dir(self.record.id)
            name = f"{self.kind}-{secrets.token_hex(8)}.safetensors"
            model.save(folder / name)  # atomic: temp file, fsync, rename
            extra = {"checkpoint": name, "fingerprint": fingerprint, "trained_count": patterns.shape[0]}
            with self.writing:
                if self.deleted:
                    return
                storage.set_extra(self.record.id, extra)  # durable: the switch-over point
                with self.rw.write():
                    self.model, self._trained_fingerprint = model, fingerprint
                    self._trained_count = patterns.shape[0]
                    old, self._checkpoint = self._checkpoint, name
            if old is not None:
                (folder / old).unlink(missing_ok=True)

        return work, patterns.shape[0], total

    def training_ended(self, status: str) -> None:
        self._training = False

    def restore(self, storage: Storage) -> None:
        extra = self.record.extra
        name = extra.get("checkpoint")
        folder = storage.checkpoint_dir(self.record.id)
        if name:
            path = folder / name
            try:
                self.model = self.model_class.load(path, device=self.device)
            except (OSError, ValueError) as exc:  # storage names it, so this is damage
                log.error("memory %r: checkpoint %s unreadable (%s); it is untrained now", self.name, path, exc)
                name = None
            else:
                self._trained_fingerprint = extra.get("fingerprint")
                self._trained_count = int(extra.get("trained_count", 0))
                self._checkpoint = name
        for leftover in folder.glob(f"{self.kind}-*.safetensors"):  # written, never switched to
            if leftover.name != name:
                leftover.unlink(missing_ok=True)


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
        dim = _stored_dim(shape, text)
        _check_keys(cls.kind, config, [f.name for f in fields(PCConfig)])
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
    def resolve_config(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False) -> dict[str, Any]:
        allowed = [f.name for f in fields(PCGraphConfig) if f.name != "dim"]
        config = upgrade_keys(config)  # the old names of knobs (LEGACY_KEYS) too
        _check_keys(cls.kind, config, allowed)
        resolved = {**asdict(PCGraphConfig(dim=1)), **config, "dim": _stored_dim(shape, text)}
        if resolved["topology"] == "custom":
            raise ValueError("topology 'custom' needs an adjacency, which only the Python API takes")
        try:
            checked = PCGraphConfig.from_dict(resolved)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: {exc}") from None
        if checked.n_vertices > cls.MAX_VERTICES:
            raise ValueError(
                f"a graph of {checked.n_vertices} vertices (D = {checked.dim} sensory + hidden) is over "
                f"{cls.MAX_VERTICES}: its dense weights would take {4 * checked.n_vertices ** 2 / 2 ** 30:.1f} GiB"
            )
        out = asdict(checked)
        del out["dim"]  # the memory's shape says it
        return json.loads(json.dumps(out))

    def _new_model(self) -> PCGraph:
        dim = _stored_dim(self.record.shape, self.record.text)
        config = PCGraphConfig.from_dict({**self.record.config, "dim": dim})  # old key names too
        return PCGraph(**asdict(config), device=self.device)
