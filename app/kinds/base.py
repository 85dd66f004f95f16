"""``LiveMemory``: one memory in RAM, the base class of every kind (``app.kinds``).

A ``LiveMemory`` is one memory in RAM: its stored patterns (in a ``UniversalHopfield``
index, which also names the stored patterns nearest a result), their ids in storage
order, and the locks that make concurrent use safe:

- ``rw`` (readers-writer): recalls read together; a store or delete applies its
  change to the tensors alone, so a recall never sees half a change (no torn reads);
- ``writing``: one write (durable storage + RAM) at a time per memory, so RAM and
  storage agree on order and ids.

A kind says what its ``config`` means (``resolve_config``: the constructor's
arguments with defaults filled in), how a cue becomes a result (``_output``), and
its state. Adding a kind = one module with a subclass + one line in ``app.kinds.KINDS``.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from memory_core import UniversalHopfield
from memory_core.crossmodal import nearest_captions

from ..exceptions import ApiError, MemoryEmpty
from ..jobs import JobContext
from ..rwlock import RWLock
from ..storage import MemoryRecord, Storage
from ..text_memory import layout_of, stored_dim

__all__ = [
    "CaptionLookup",
    "LiveMemory",
    "Recall",
    "TextLookup",
    "check_caps",
    "check_fields",
    "check_finite",
    "check_keys",
    "check_number",
]


@dataclass(frozen=True)
class Recall:
    """What a recall gives back.

    Attributes:
        output: (D,) the result, float32 on the CPU.
        matches: (id, score) of the stored patterns nearest the result, best first.
        energy: the result's energy under the memory's model.
        state, trained_count: the memory's state and what its model had learned.
        report: what the recall did, for kinds that say (pc: ``RecallReport``'s fields).
    """

    output: Tensor
    matches: list[tuple[str, float]]
    energy: float
    state: str
    trained_count: int
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class TextLookup:
    """Text -> pattern answers for B queries.

    Attributes:
        outputs: (B, D) the completed pattern parts.
        matches: per query, [(id, score)] of the stored pairs whose captions fit best.
        stored: (B, k, D) the matched stored patterns.
        energies, state, trained_count: as in ``Recall``.
    """

    outputs: Tensor
    matches: list[list[tuple[str, float]]]
    stored: Tensor
    energies: list[float]
    state: str
    trained_count: int


@dataclass(frozen=True)
class CaptionLookup:
    """Pattern -> caption answers: per cue, [(id, cosine score)] of the nearest stored captions."""

    matches: list[list[tuple[str, float]]]
    energies: list[float]
    state: str
    trained_count: int


class LiveMemory(ABC):
    """One memory in RAM; subclasses give a kind's config, recall and state.

    Arguments:
        record: the stored record (name, shape, resolved config, ...).
        device: where the tensors live.
    """

    kind: ClassVar[str]
    trainable: ClassVar[bool] = False
    shaped: ClassVar[bool] = True  # stores patterns of a shape; False: a relational memory (facts)
    items: ClassVar[str] = "patterns"  # what it stores, for messages

    def __init__(self, record: MemoryRecord, device: torch.device) -> None:
        self.record = record
        self.device = device
        self.rw = RWLock()
        self.writing = threading.Lock()
        self.deleted = False
        self.ids: list[str] = []  # row -> pattern id, in the index's row order
        self.seqs: list[int] = []  # row -> storage sequence number
        self._rows: dict[str, int] = {}  # pattern id -> row

    # --- what a kind defines ----------------------------------------------------------
    @classmethod
    @abstractmethod
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        """Validate a create request's config and fill in the defaults; ValueError if bad.

        ``text``: a cross-modal memory, whose stored vectors also hold a caption embedding.
        """

    @classmethod
    def stored_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config as stored by an earlier version, in today's form (renamed keys); as is by default."""
        return config

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """What ``config: {}`` resolves to, for /v1/info."""
        return cls.resolve_config({}, (1,))

    @property
    @abstractmethod
    def index(self) -> UniversalHopfield:
        """The stored patterns, (N, D), searchable."""

    @abstractmethod
    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        """Results (B, D) and their energies (B,) for cues (B, D); caller holds ``rw.read``."""

    def _recall(
        self, cue: Tensor, mask: Tensor | None, steps: int
    ) -> tuple[Tensor, Tensor, list[dict[str, Any]] | None]:
        """``_output`` and, for kinds that say what a recall did, one report per cue."""
        return (*self._output(cue, mask, steps), None)

    @property
    def state(self) -> str:
        """ready, or for trained kinds: untrained, training, ready, stale."""
        return "ready"

    @property
    def trained_count(self) -> int:
        """Stored patterns the recall model has learned."""
        return self.count

    @property
    def failure(self) -> str | None:
        """Why this memory cannot serve (state "failed"), or None: set by recovery."""
        return None

    def _changed(self) -> None:
        """Called (under ``rw.write``) after patterns were added or removed."""

    def restore(self, storage: Storage) -> None:
        """After a restart, once the patterns are loaded: load kind-specific state (checkpoints)."""

    def training(
        self, storage: Storage, epochs: int | None
    ) -> tuple[Callable[[JobContext], None], int, int | None]:
        """Trainable kinds: (the job's work function, patterns it trains on, epochs).

        Called under ``writing``; the work runs later on the job's thread.
        """
        raise NotImplementedError(f"kind {self.kind} has no training")

    def training_ended(self, status: str) -> None:
        """Called once a training job has ended, however it ended (even before it started)."""

    # --- what a kind's memory takes (the memory budget, app/budget.py) ----------------
    @classmethod
    def model_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool) -> int:
        """Bytes a model of this (resolved) config keeps in RAM beyond the stored patterns:
        parameters, optimizer state, recall caches. 0 for kinds whose patterns are the model."""
        return 0

    @classmethod
    def training_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, patterns: int) -> int:
        """Bytes a training job on ``patterns`` stored patterns holds while it runs (its copy of
        the model, the patterns' snapshot, its working set); 0 for kinds without training."""
        return 0

    @classmethod
    def recall_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, batch: int) -> int:
        """Bytes one batched recall of ``batch`` cues needs on top of the model (its working set)."""
        return 0

    def resident_bytes(self) -> int:
        """Bytes this memory holds in RAM now: stored patterns and model (read without a lock:
        a moment's figure, as the budget's checks need)."""
        r = self.record
        return 4 * self.count * stored_dim(r.shape, r.text) + (
            self.model_bytes(r.config, r.shape, r.text) if self.has_model else 0
        )

    @property
    def has_model(self) -> bool:
        """Whether a model of ``model_bytes`` is in RAM now."""
        return True

    # --- shared machinery -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.record.name

    @property
    def count(self) -> int:
        return len(self.ids)

    def has(self, pattern_id: str) -> bool:
        return pattern_id in self._rows

    def add(self, seqs: list[int], ids: list[str], vectors: Tensor) -> None:
        """Append patterns (n, D) already stored durably; caller holds ``rw.write``."""
        self.index.store(vectors.to(self.device))
        for row, pid in enumerate(ids, start=len(self.ids)):
            self._rows[pid] = row
        self.ids.extend(ids)
        self.seqs.extend(seqs)
        self._changed()

    def remove(self, pattern_id: str) -> None:
        """Forget one pattern (already deleted from storage); caller holds ``rw.write``."""
        row = self._rows.pop(pattern_id)
        self.index.remove([row])
        del self.ids[row]
        del self.seqs[row]
        for later in range(row, len(self.ids)):  # rows after it moved up by one
            self._rows[self.ids[later]] = later
        self._changed()

    def recall(self, cue: Tensor, mask: Tensor | None, k: int, steps: int) -> Recall:
        """Recall from one cue (D,) with an optional mask (D,) bool, True = known."""
        return self.recall_batch(cue[None], None if mask is None else mask[None], k, steps)[0]

    def recall_batch(self, cues: Tensor, masks: Tensor | None, k: int, steps: int) -> list[Recall]:
        """Recall from cues (B, D) with optional masks (B, D) bool (an all-True row = no mask).

        One pass for the whole batch, under one read lock: what a micro-batcher of
        concurrent recalls calls. Raises ``MemoryEmpty`` on an empty memory,
        ``NotTrained`` when the kind needs a trained model and has none. In a text
        memory the caption part of each cue is unknown, and results are the pattern
        part (D,) of what the memory completes.
        """
        with self.rw.read():
            self._check_recallable()
            cues = cues.to(self.device, torch.float32)  # (B, D)
            masks = None if masks is None else masks.to(self.device)  # (B, D)
            if self.record.text:
                cues, masks = layout_of(self.record).image_cue(cues, masks)  # (B, D + 384)
            out, energy, reports = self._recall(cues, masks, steps)  # (B, D'), (B,), B reports
            check_finite(out)
            scores, rows = self.index.search(out, k=min(k, self.count))  # (B, k), (B, k)
            out = out[:, : self.record.dim]
            state, trained = self.state, self.trained_count
            # + 0.0 turns -0.0 (a negated distance of 0) into 0.0 for the JSON answer.
            out, energy = out.float().cpu(), (energy.float().cpu() + 0.0).tolist()
            scores = (scores.float().cpu() + 0.0).tolist()
            return [
                Recall(
                    output=out[b],
                    matches=[(self.ids[r], s) for s, r in zip(scores[b], rows[b].tolist(), strict=True)],
                    energy=energy[b],
                    state=state,
                    trained_count=trained,
                    report=None if reports is None else reports[b],
                )
                for b in range(out.shape[0])
            ]

    def nbytes(self) -> int:
        """Bytes of the stored patterns in RAM (a kind with a model adds its parameters)."""
        with self.rw.read():
            if self.count == 0:
                return 0
            index = self.index
            stored = [index.keys] + ([index.values] if index.hetero else [])
            return sum(t.numel() * t.element_size() for t in stored)

    def _check_recallable(self) -> None:
        if self.count == 0:
            raise MemoryEmpty(f"memory {self.name!r} is empty: store {self.items} first")

    def lookup_text(self, embeddings: Tensor, k: int) -> TextLookup:
        """Text -> pattern in a text memory: captions (B, 384) known, patterns completed.

        ``matches`` rank the stored pairs by the memory's similarity on the caption part
        alone (the patterns whose captions best fit the query); ``output`` is the
        pattern part the memory completes.
        """
        layout = layout_of(self.record)
        with self.rw.read():
            self._check_recallable()
            cue, mask = layout.text_cue(embeddings.to(self.device, torch.float32))  # (B, D + 384)
            out, energy = self._output(cue, mask, 1)  # (B, D + 384), (B,)
            check_finite(out)
            scores, rows = self.index.search(cue, k=min(k, self.count), mask=mask)  # (B, k)
            stored = layout.image_part(self.index.keys[rows.flatten()]).float().cpu()  # (B*k, D)
            return TextLookup(
                outputs=layout.image_part(out).float().cpu(),
                matches=self._named(scores, rows),
                stored=stored.reshape(rows.shape[0], rows.shape[1], -1),
                energies=(energy.float().cpu() + 0.0).tolist(),
                state=self.state,
                trained_count=self.trained_count,
            )

    def lookup_captions(self, cues: Tensor, masks: Tensor | None, k: int) -> CaptionLookup:
        """Pattern -> caption in a text memory: patterns (B, D) (optionally partial) known,
        the caption part completed and read out as the k nearest stored captions (cosine)."""
        layout = layout_of(self.record)
        with self.rw.read():
            self._check_recallable()
            cue, mask = layout.image_cue(
                cues.to(self.device, torch.float32), None if masks is None else masks.to(self.device)
            )
            out, energy = self._output(cue, mask, 1)  # (B, D + 384), (B,)
            check_finite(out)
            stored = layout.text_part(self.index.keys)  # (N, 384)
            scores, rows = nearest_captions(layout.text_part(out), stored, k=min(k, self.count))
            return CaptionLookup(
                matches=self._named(scores, rows),
                energies=(energy.float().cpu() + 0.0).tolist(),
                state=self.state,
                trained_count=self.trained_count,
            )

    def _named(self, scores: Tensor, rows: Tensor) -> list[list[tuple[str, float]]]:
        """(B, k) scores and rows -> per cue, [(pattern id, score)] best first."""
        scores_l = (scores.float().cpu() + 0.0).tolist()
        return [
            [(self.ids[r], s) for s, r in zip(sc, rw, strict=True)] for sc, rw in zip(scores_l, rows.tolist())
        ]

    def details(self) -> dict[str, Any]:
        """Count, state, trained_count and the failure's reason (None), read together."""
        with self.rw.read():
            return {
                "count": self.count,
                "state": self.state,
                "trained_count": self.trained_count,
                "error": self.failure,
            }


def check_number(key: str, value: Any, integer: bool = False) -> None:
    """ValueError unless ``value`` is a finite number (an integer when ``integer``; never a bool)."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        raise ValueError(
            f"config.{key} must be {'an integer' if integer else 'a finite number'}, got {value!r}"
        )


def check_finite(out: Tensor) -> None:
    """422 for a result with NaN or inf (the micro-batcher then reruns the batch's cues one by
    one, so only the cue that caused it gets the error)."""
    if not bool(torch.isfinite(out).all()):
        raise ApiError(
            422,
            "non_finite_result",
            "the recall produced NaN or infinite values: the cue's values are too large for this "
            "memory's model (or its model is damaged)",
        )


_INT_RANGE = 2**31  # config integers: counts, sizes and seeds, all far below it


def _field_ok(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a config field's annotation (``int``, ``float``, ``str``,
    ``bool``, ``tuple[float, ...]``, unions of those and None): ints within +-2^31, numbers finite."""
    for option in (part.strip() for part in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if option == "int" and isinstance(value, int) and -_INT_RANGE < value < _INT_RANGE:
            return True
        if option == "float" and isinstance(value, (int, float)) and math.isfinite(value):
            return True
        if option == "str" and isinstance(value, str):
            return True
        if option.startswith("tuple[") and isinstance(value, (list, tuple)):
            item = option[len("tuple[") :].split(",")[0].strip()
            if all(_field_ok(v, item) for v in value):
                return True
    return False


_WORDS = {
    "int": "an integer (|n| < 2^31)",
    "float": "a finite number",
    "str": "a string",
    "bool": "a boolean",
}


def _describe(annotation: str) -> str:
    options = [part.strip() for part in annotation.split("|")]
    words = [
        "null"
        if o == "None"
        else f"a list of {_describe(o[6:].split(',')[0])}"
        if o.startswith("tuple[")
        else _WORDS.get(o, o)
        for o in options
    ]
    return " or ".join(words)


def check_fields(config: dict[str, Any], spec: type) -> None:
    """ValueError naming the first key of ``config`` whose value does not fit the type of the
    dataclass ``spec``'s field of that name (see ``_field_ok``), so that a config accepted at
    create can never fail later for its types (an int of 2^70, a NaN, a string for a number)."""
    types = {
        f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "") for f in fields(spec)
    }
    for key, value in config.items():
        annotation = types.get(key)
        if annotation and not _field_ok(value, annotation):
            raise ValueError(f"config.{key} must be {_describe(annotation)}, got {value!r}")


def check_caps(config: dict[str, Any], max_epochs: int, max_steps: int) -> None:
    """ValueError for work counts over the service's caps, by key name, whatever the kind:
    ``epochs`` over ``max_epochs`` (AMS_MAX_EPOCHS); ``*_steps``, ``*_iters`` and ``*_sweeps``
    over ``max_steps`` (AMS_MAX_SOLVER_STEPS)."""
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if key == "epochs" and value > max_epochs:
            raise ValueError(f"config.epochs = {value} is over AMS_MAX_EPOCHS = {max_epochs}")
        if key.endswith(("_steps", "_iters", "_sweeps")) and value > max_steps:
            raise ValueError(f"config.{key} = {value} is over AMS_MAX_SOLVER_STEPS = {max_steps}")


def check_keys(kind: str, config: dict[str, Any], allowed: list[str]) -> None:
    """ValueError naming the keys of ``config`` that ``allowed`` lacks."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for kind {kind}; known: {allowed}")
