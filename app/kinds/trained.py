"""``TrainedKind``: the base of the kinds whose recall model learns in a background job.

``TrainedKind`` holds what they share: a store is durable at once and does not train;
``POST .../train`` starts a job that fits a copy of the current model (a warm start
when there is one) on a snapshot of the stored patterns, writes its checkpoint
atomically, records it in storage (the switch-over point) and only then swaps it in.
Recalls always use a whole model, the last trained one; a cancelled or failed job
changes nothing.

State: ``untrained`` (no model yet), ``training`` (a job is queued or running),
``ready`` (the model was fit on exactly the patterns stored now), ``stale`` (patterns
were stored or deleted since), ``failed`` (the checkpoint recovery found was damaged:
recalls answer 409 ``memory_failed`` with the reason; stores still work, and a training
job that succeeds repairs it with a fresh model).

A job runs under the job manager's interrupt hook (``app/jobs.py``): a cancelled job stops
within one step of ``fit``. Nothing of a cancelled, failed or orphaned job (its memory
deleted meanwhile) stays: its checkpoint file is removed, the model kept is the last one.
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

from ..exceptions import MemoryFailed, NotTrained
from ..jobs import JobContext
from ..storage import MemoryRecord, Storage
from .base import LiveMemory, check_finite

__all__ = ["TrainedKind"]


def _remove_if_empty(folder) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone already
        pass


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
        self._training = 0  # jobs started and not yet ended (one, but a new one may start as one ends)
        self._checkpoint: str | None = None
        self._model_fault: str | None = None  # why the recovered checkpoint could not be loaded

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
            return "failed" if self._model_fault else "untrained"
        return "ready" if self._trained_fingerprint == self._fingerprint else "stale"

    @property
    def failure(self) -> str | None:
        return self._model_fault if self.model is None else None

    @property
    def has_model(self) -> bool:
        return self.model is not None

    @property
    def trained_count(self) -> int:
        return self._trained_count

    def _changed(self) -> None:
        self._fingerprint = _fingerprint(self.seqs)

    def _trained_model(self) -> Any:
        """The current model; ``MemoryFailed`` (409) while its checkpoint is damaged, ``NotTrained``
        (409) before the first training."""
        if self.model is None and self._model_fault:
            raise MemoryFailed(self.name, self._model_fault)
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
        check_finite(out)  # before its energy, which refuses NaN
        return out, model.energy(out)  # (B, D), (B,)

    def training(
        self, storage: Storage, epochs: int | None
    ) -> tuple[Callable[[JobContext], None], int, int | None]:
        # A snapshot of what is stored now: the job trains on exactly this.
        patterns = self.index.keys.detach().to("cpu", torch.float32).clone()  # (N, D)
        ids, fingerprint, start = list(self.ids), self._fingerprint, self.model
        total = int(epochs if epochs is not None else self.record.config["epochs"])
        self._training += 1

        def work(ctx: JobContext) -> None:
            model = self._training_copy(start) if start is not None else self._new_model()
            history = self._fit(
                model,
                patterns.to(self.device),
                ids,
                total,
                lambda info: ctx.report(info["epoch"], info["epochs"], info["energy"]),
            )
            ctx.check()  # cancelled (or its memory deleted) while the last epoch ran: keep nothing
            ctx.stopped(getattr(history, "stopped", "epochs"))  # "epochs" or "energy" (pc)
            self._switch_to(storage, model, fingerprint, patterns.shape[0])

        return work, patterns.shape[0], total

    def _switch_to(self, storage: Storage, model: Any, fingerprint: str, count: int) -> None:
        """Write ``model``'s checkpoint, record it (the durable switch-over) and swap it in;
        a write that fails, or a memory deleted meanwhile, leaves no file behind."""
        folder = storage.checkpoint_dir(self.record.id)
        name = f"{self.kind}-{secrets.token_hex(8)}.safetensors"
        try:
            model.save(folder / name)  # atomic: temp file, fsync, rename
            extra = {"checkpoint": name, "fingerprint": fingerprint, "trained_count": count}
            with self.writing:
                if self.deleted:  # deleted while it trained: its folder must not come back
                    for written in self._checkpoint_files(name):
                        (folder / written).unlink(missing_ok=True)
                    _remove_if_empty(folder)
                    return
                storage.set_extra(self.record.id, extra)  # durable: the switch-over point
                with self.rw.write():
                    self.model, self._trained_fingerprint = model, fingerprint
                    self._trained_count, self._model_fault = count, None
                    old, self._checkpoint = self._checkpoint, name
        except BaseException:
            for written in self._checkpoint_files(name):  # never switched to
                (folder / written).unlink(missing_ok=True)
            raise
        for stale in self._checkpoint_files(old) if old is not None else []:
            (folder / stale).unlink(missing_ok=True)

    def training_ended(self, status: str) -> None:
        self._training = max(0, self._training - 1)

    def restore(self, storage: Storage) -> None:
        extra = self.record.extra
        name = extra.get("checkpoint")
        folder = storage.checkpoint_dir(self.record.id)
        if name:
            path = folder / name
            try:
                self.model = self._load_model(path)
            except Exception as exc:  # storage names it, so this is damage, whatever the error
                self._model_fault = (
                    f"its model checkpoint {name} is damaged ({type(exc).__name__}: {exc}); "
                    "train it again (POST .../train) or delete it"
                )
                log.error("memory %r: %s", self.name, self._model_fault)
                self._checkpoint = name  # kept for inspection until a new model replaces it
            else:
                self._trained_fingerprint = extra.get("fingerprint")
                self._trained_count = int(extra.get("trained_count", 0))
                self._checkpoint = name
        keep = set(self._checkpoint_files(name)) if name else set()
        for leftover in folder.glob(f"{self.kind}-*.safetensors"):  # written, never switched to
            if leftover.name not in keep:
                leftover.unlink(missing_ok=True)
