"""``TrainedKind``: the base of the kinds whose recall model learns in a background job.

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
import logging
import secrets
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from memory_core import UniversalHopfield

from ..exceptions import NotTrained
from ..jobs import JobContext
from ..storage import MemoryRecord, Storage
from .base import LiveMemory

__all__ = ["TrainedKind"]

log = logging.getLogger("app.kinds.trained")


def _fingerprint(seqs: list[int]) -> str:
    """Names a set of stored patterns (their storage sequence numbers, in order)."""
    return hashlib.sha256(",".join(map(str, seqs)).encode()).hexdigest()[:20]


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

    # --- what a kind may change (pc: its memory index) ------------------------------------
    def _training_copy(self, model: Any) -> Any:
        """The model a job trains: a copy, so recalls keep using ``model`` until the new one is whole."""
        return copy.deepcopy(model)

    def _fit(
        self, model: Any, patterns: Tensor, ids: list[str], epochs: int, callback: Callable[[dict], Any]
    ) -> Any:
        """Fit ``model`` on the snapshot ``patterns`` (N, D), whose ids are ``ids``; its history."""
        return model.fit(patterns, epochs=epochs, progress=False, callback=callback)

    def _checkpoint_files(self, name: str) -> list[str]:
        """The files a checkpoint named ``name`` consists of (in the memory's checkpoint folder)."""
        return [name]

    def _load_model(self, path: Path) -> Any:
        """Read a checkpoint (``model_class.load``); OSError or ValueError if it cannot be."""
        return self.model_class.load(path, device=self.device)

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

    def _trained_model(self) -> Any:
        """The current model; ``NotTrained`` (409) before the first training."""
        if self.model is None:
            raise NotTrained(f"memory {self.name!r} has no trained model yet: POST .../train first")
        return self.model

    @staticmethod
    def _retrieve(model: Any, cue: Tensor, mask: Tensor | None) -> Tensor:
        """``model.retrieve`` for cues (B, D); a batch may mix cues with unknown entries
        (completion) and whole cues (an all-True row: denoising, as without a mask)."""
        if mask is None:
            return model.retrieve(cue)  # (B, D): recall from noisy cues
        whole = mask.all(dim=1)  # (B,)
        out = torch.empty_like(cue)
        if bool(whole.any()):
            out[whole] = model.retrieve(cue[whole])
        if not bool(whole.all()):
            out[~whole] = model.retrieve(cue[~whole], mask=mask[~whole])
        return out

    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        model = self._trained_model()
        out = self._retrieve(model, cue, mask)
        return out, model.energy(out)  # (B, D), (B,)

    def training(
        self, storage: Storage, epochs: int | None
    ) -> tuple[Callable[[JobContext], None], int, int | None]:
        # A snapshot of what is stored now: the job trains on exactly this.
        patterns = self.index.keys.detach().to("cpu", torch.float32).clone()  # (N, D)
        ids, fingerprint, start = list(self.ids), self._fingerprint, self.model
        total = int(epochs if epochs is not None else self.record.config["epochs"])
        self._training = True

        def work(ctx: JobContext) -> None:
            model = self._training_copy(start) if start is not None else self._new_model()
            history = self._fit(
                model,
                patterns.to(self.device),
                ids,
                total,
                lambda info: ctx.report(info["epoch"], info["epochs"], info["energy"]),
            )
            if ctx.cancelled:
                return
            ctx.stopped(getattr(history, "stopped", "epochs"))  # "epochs" or "energy" (pc)
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
            for stale in self._checkpoint_files(old) if old is not None else []:
                (folder / stale).unlink(missing_ok=True)

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
                self.model = self._load_model(path)
            except (OSError, ValueError) as exc:  # storage names it, so this is damage
                log.error(
                    "memory %r: checkpoint %s unreadable (%s); it is untrained now", self.name, path, exc
                )
                name = None
            else:
                self._trained_fingerprint = extra.get("fingerprint")
                self._trained_count = int(extra.get("trained_count", 0))
                self._checkpoint = name
        keep = set(self._checkpoint_files(name)) if name else set()
        for leftover in folder.glob(f"{self.kind}-*.safetensors"):  # written, never switched to
            if leftover.name not in keep:
                leftover.unlink(missing_ok=True)
