"""Kind "relational": a knowledge base of facts (``memory_core.boxe.BoxE``), trained in the background.

A relational memory stores facts ``relation(arg_1, .., arg_n)`` under names and completes a
fact with one missing argument. A fact is durable in SQLite (``Storage.add_facts``) before
it reaches the model; the live model (``self.model``) always holds every stored fact and
the memory's rules, and its embeddings are what the last finished training learned.

Training (``training``): a job fits a copy of the model on the facts stored when it started
(the live model keeps answering queries), writes the copy's checkpoint atomically, replays
onto it the facts stored or deleted meanwhile, records the checkpoint in storage (the
switch-over point) and swaps it in. A cancelled or failed job changes nothing.

Restart (``restore``): the recorded checkpoint is loaded and reconciled with the facts in
storage, which are the truth: facts stored after it are added, facts deleted after it are
removed (the memory is then ``stale``: its embeddings have not seen them).

State: ``untrained`` (no training finished yet; queries answer 409 ``not_trained``),
``training``, ``ready`` (trained on exactly the facts stored now), ``stale``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from memory_core import UniversalHopfield
from memory_core.boxe import (
    ArityError,
    BoxE,
    BoxEConfig,
    RuleConflictError,
    RuleError,
    UnknownEntityError,
    UnknownRelationError,
)

from ..exceptions import (
    ArityMismatch,
    FactNotFound,
    InvalidQuery,
    InvalidRule,
    MemoryFailed,
    MemoryNotFound,
    NotTrained,
    RuleConflict,
    UnknownEntity,
    UnknownRelation,
    WrongKind,
)
from ..jobs import JobContext
from ..storage import Fact, MemoryRecord, Storage
from .base import LiveMemory, check_fields, check_keys, check_number

__all__ = ["Candidate", "QueryAnswer", "RelationalKind"]

log = logging.getLogger("app.kinds.relational")

_INTEGERS = ("dim", "norm", "negatives", "batch_size", "epochs", "seed")
_NUMBERS = ("margin", "adversarial_temperature", "lr")


@dataclass(frozen=True)
class Candidate:
    """One entity ranked as the missing argument: its score (higher is truer, 0 best) and
    whether it completes a stored fact."""

    entity: str
    score: float
    known: bool


@dataclass(frozen=True)
class QueryAnswer:
    candidates: list[Candidate]
    state: str
    trained_count: int


class RelationalKind(LiveMemory):
    """A BoxE knowledge base (see the module docstring).

    Config keys are ``BoxEConfig``'s fields (``dim``, ``norm``, ``tanh``, ``margin``,
    ``adversarial_temperature``, ``negatives``, ``batch_size``, ``lr``, ``epochs``, ``seed``)
    and ``rules`` (``memory_core.boxe.parse_rule`` forms), fixed when the memory is made.
    """

    kind = "relational"
    trainable = True
    shaped = False
    items = "facts"
    MAX_DIM: ClassVar[int] = 1024
    # batch_size * (1 + negatives) * dim floats per argument position in one training step:
    # 10x the defaults' 425 984, so that no config can make one step take gigabytes.
    MAX_STEP_FLOATS: ClassVar[int] = 1 << 22
    MAX_EPOCHS: ClassVar[int] = 100_000  # as POST .../train allows

    def __init__(self, record: MemoryRecord, device: torch.device) -> None:
        super().__init__(record, device)
        self.model = self._new_model()
        self._trained = False  # whether self.model's embeddings come from a finished training
        self._version = 0  # bumped by every change of the facts
        self._trained_version = -1  # the version the embeddings were trained on
        # One journal per unfinished training job, oldest first: the changes of the facts since
        # its snapshot. Jobs of a memory run one at a time, but the next may be submitted before
        # the last one's training_ended; hence a queue, and a lock of its own (training_ended may
        # run under `writing`, when a submit fails).
        self._journals: deque[list[tuple[str, list[Fact]]]] = deque()
        self._journal_lock = threading.Lock()
        self._checkpoint: str | None = None
        self._model_fault: str | None = None  # why the recovered checkpoint could not be loaded

    # --- config -------------------------------------------------------------------------
    @classmethod
    def resolve_config(
        cls, config: dict[str, Any], shape: tuple[int, ...], text: bool = False
    ) -> dict[str, Any]:
        check_keys(cls.kind, config, [*(f.name for f in fields(BoxEConfig)), "rules"])
        settings = {k: v for k, v in config.items() if k != "rules"}
        for key in _INTEGERS:
            if key in settings:
                check_number(key, settings[key], integer=True)
        for key in _NUMBERS:
            if key in settings:
                check_number(key, settings[key])
        if not isinstance(settings.get("tanh", True), bool):
            raise TypeError(f"config.tanh must be true or false, got {settings['tanh']!r}")
        try:
            checked = BoxEConfig.from_dict({**asdict(BoxEConfig()), **settings})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: {exc}") from None
        check_fields(settings, BoxEConfig)
        cls._check_limits(checked)
        rules = config.get("rules", [])
        if not isinstance(rules, list):
            raise TypeError(f"config.rules must be a list of rules, got {rules!r}")
        try:
            model = BoxE(config=checked, rules=rules, device="cpu")  # refuses bad or contradictory rules
        except RuleConflictError as exc:
            raise RuleConflict(f"config.rules contradict each other: {exc}") from None
        except (RuleError, ArityError, TypeError) as exc:
            raise InvalidRule(f"config.rules: {exc}") from None
        return {**checked.to_dict(), "rules": model.rules}

    @classmethod
    def _check_limits(cls, config: BoxEConfig) -> None:
        if config.dim > cls.MAX_DIM:
            raise ValueError(f"config.dim must be at most {cls.MAX_DIM}, got {config.dim}")
        if config.epochs > cls.MAX_EPOCHS:
            raise ValueError(f"config.epochs must be at most {cls.MAX_EPOCHS}, got {config.epochs}")
        if not 0 <= config.seed < 2**32:  # BoxE derives generator seeds from it (torch: 64 bits)
            raise ValueError(f"config.seed must be in [0, 2**32), got {config.seed}")
        step = config.batch_size * (1 + config.negatives) * config.dim
        if step > cls.MAX_STEP_FLOATS:
            raise ValueError(
                f"batch_size * (1 + negatives) * dim = {step} is over {cls.MAX_STEP_FLOATS}: "
                "one training step would hold too much; lower one of them"
            )

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return cls.resolve_config({}, ())

    def _new_model(self) -> BoxE:
        settings = {k: v for k, v in self.record.config.items() if k != "rules"}
        return BoxE(
            config=BoxEConfig.from_dict(settings), rules=self.record.config["rules"], device=self.device
        )

    # --- what LiveMemory asks of a kind: patterns do not apply ----------------------------------
    @property
    def index(self) -> UniversalHopfield:
        raise WrongKind(f"memory {self.name!r} is relational: it stores facts, not patterns")

    def _output(self, cue: Tensor, mask: Tensor | None, steps: int) -> tuple[Tensor, Tensor]:
        raise WrongKind(f"memory {self.name!r} is relational: ask it with POST .../query")

    @property
    def count(self) -> int:
        """Stored facts."""
        return len(self.model)

    @property
    def state(self) -> str:
        if self._journals:
            return "training"
        if not self._trained:
            return "failed" if self._model_fault else "untrained"
        return "ready" if self._trained_version == self._version else "stale"

    @property
    def failure(self) -> str | None:
        """Why the recovered checkpoint could not be loaded, until a training job succeeds."""
        return None if self._trained else self._model_fault

    @property
    def trained_count(self) -> int:
        """Facts the current embeddings were trained on."""
        return self.model.trained_facts if self._trained else 0

    # --- what it takes (the memory budget, app/budget.py) ---------------------------------------
    # A model in RAM: its embeddings, their gradients and Adam's two moments (4 float32 copies);
    # a training job adds its copy of all that. Entities per fact: at most its arity, taken as 2
    # (binary facts; n-ary facts share their entities in practice). One step's working set:
    # the batch's scores over (1 + negatives) candidates per argument position, with autograd's
    # intermediates (8 floats each).
    _COPIES, _ENTITIES_PER_FACT, _STEP_FLOATS_PER_SCORE, _POSITIONS = 4, 2, 8, 2

    @classmethod
    def training_bytes(cls, config: dict[str, Any], shape: tuple[int, ...], text: bool, patterns: int) -> int:
        dim = int(config["dim"])
        model = 4 * cls._COPIES * (2 * cls._ENTITIES_PER_FACT * patterns * dim)
        step = int(config["batch_size"]) * (1 + int(config["negatives"])) * dim * cls._POSITIONS
        return model + 4 * cls._STEP_FLOATS_PER_SCORE * step + 8 * 3 * patterns  # + the facts' table

    # One query (``BoxE.complete``): every relation's boxes (2 x R x A x d floats, for both
    # the boxes and their tanh); the candidates scored a chunk at a time (``_candidate_scores``:
    # about a dozen tensors of up to E x A x d floats, capped at its chunk of 2^18 floats);
    # per entity its score, the sort's indices, masks and the orders built from them (~48
    # bytes); per candidate returned, the ranked (name, score) pair, its Candidate, the
    # response's model and JSON (~1 KiB, measured: 390 B for the pair and its JSON alone).
    _QUERY_CHUNK_FLOATS, _QUERY_CHUNK_TENSORS, _QUERY_BYTES_PER_ENTITY, _QUERY_BYTES_PER_ANSWER = (
        1 << 18,
        12,
        48,
        1024,
    )

    def query_bytes(self, k: int) -> int:
        """Bytes one query asking for ``k`` candidates may hold while it runs (a moment's figure,
        read without a lock: the entities grow only as facts are stored)."""
        model = self.model
        entities, arity, dim = len(model.entities), max(1, model.max_arity), int(self.record.config["dim"])
        boxes = 2 * 2 * len(model.relations) * arity * dim
        chunk = self._QUERY_CHUNK_TENSORS * min(entities * arity * dim, self._QUERY_CHUNK_FLOATS)
        return (
            4 * (boxes + chunk)
            + self._QUERY_BYTES_PER_ENTITY * entities
            + self._QUERY_BYTES_PER_ANSWER * min(k, entities)
        )

    def resident_bytes(self) -> int:
        """The model's tensors as they are now (embeddings, boxes, facts) and what training them
        keeps beside them (gradients, Adam's moments); read without a lock, a moment's figure."""
        model = self.model
        weights = sum(p.numel() for p in model.parameters())
        return 4 * self._COPIES * weights + 8 * len(model) * (1 + model.max_arity)

    def nbytes(self) -> int:
        with self.rw.read():
            tensors = [*self.model.parameters(), self.model.facts.table()]
            return sum(t.numel() * t.element_size() for t in tensors)

    # --- facts --------------------------------------------------------------------------
    def _changed(self, op: str, facts: list[Fact]) -> None:
        """Called under ``writing`` and ``rw.write`` after the facts changed."""
        self._version += 1
        with self._journal_lock:
            for journal in self._journals:
                journal.append((op, facts))

    def store_facts(self, storage: Storage, facts: list[Fact]) -> tuple[list[int], int, int]:
        """Store facts (checked whole first: nothing is stored if one is refused); returns
        (their ids in order, how many were new, facts stored now), durable on return."""
        with self.writing:
            if self.deleted:
                raise MemoryNotFound(self.name)
            try:
                parsed = self.model.check_facts(facts)
            except ArityError as exc:
                raise ArityMismatch(str(exc)) from None
            ids, new = storage.add_facts(self.record.id, parsed)
            with self.rw.write():
                if self.model.add_facts(parsed):
                    self._changed("add", parsed)
                return ids, new, len(self.model)

    def delete_fact(self, storage: Storage, fact_id: int) -> None:
        """Delete one fact by id (durable on return); FactNotFound if there is none."""
        with self.writing:
            if self.deleted:
                raise MemoryNotFound(self.name)
            fact = storage.delete_fact(self.record.id, fact_id)
            if fact is None:
                raise FactNotFound(self.name, fact_id)
            with self.rw.write():
                if self.model.remove_facts([fact]):
                    self._changed("remove", [fact])

    def vocabulary(self, after: int, limit: int) -> tuple[dict[str, int], list[str], int]:
        """(relation -> arity, up to ``limit`` entity names after the first ``after``, entities in all)."""
        with self.rw.read():
            entities = self.model.entities
            return self.model.relations, entities[after : after + limit], len(entities)

    # --- queries ------------------------------------------------------------------------
    def query(self, relation: str, args: Sequence[str | None], k: int, filter_known: bool) -> QueryAnswer:
        """Rank entities as the one missing (None) argument of ``relation(args)``, best first,
        at most ``k`` (more than there are entities gives them all)."""
        with self.rw.read():
            if not self._trained and self._model_fault:
                raise MemoryFailed(self.name, self._model_fault)
            if not self._trained:
                raise NotTrained(f"memory {self.name!r} has no trained model yet: POST .../train first")
            model = self.model
            try:
                ranked = model.complete(
                    relation, args, k=min(k, len(model.entities)), filter_known=filter_known
                )
            except UnknownRelationError as exc:
                raise UnknownRelation(f"{exc} in memory {self.name!r}") from None
            except UnknownEntityError as exc:
                raise UnknownEntity(f"{exc} in memory {self.name!r}") from None
            except ArityError as exc:
                raise ArityMismatch(str(exc)) from None
            except (TypeError, ValueError) as exc:
                raise InvalidQuery(str(exc)) from None
            hole = list(args).index(None)
            ids = [model.entity_id(a) if a is not None else 0 for a in args]
            r = model.relation_id(relation)

            def known(entity: str) -> bool:
                ids[hole] = model.entity_id(entity)
                return (r, *ids) in model.facts

            candidates = [Candidate(e, float(s) + 0.0, known(e)) for e, s in ranked]
            return QueryAnswer(candidates, self.state, self.trained_count)

    # --- training -----------------------------------------------------------------------
    def training(
        self, storage: Storage, epochs: int | None
    ) -> tuple[Callable[[JobContext], None], int, int | None]:
        snapshot = self.model.copy()  # under `writing`: the facts stored now, exactly
        version, total = self._version, int(epochs if epochs is not None else self.record.config["epochs"])
        journal: list[tuple[str, list[Fact]]] = []
        with self._journal_lock:
            self._journals.append(journal)

        def work(ctx: JobContext) -> None:
            history = snapshot.fit(
                total,
                progress=False,
                callback=lambda info: ctx.report(info["epoch"], info["epochs"], info["loss"]),
                should_stop=lambda: ctx.cancelled,
            )
            if ctx.cancelled or history.stopped != "epochs":
                return
            ctx.stopped("epochs")
            folder = storage.checkpoint_dir(self.record.id)
            name = f"{self.kind}-{secrets.token_hex(8)}.safetensors"
            snapshot.save(folder / name)  # atomic: temp file, fsync, rename
            with self.writing:
                if self.deleted:
                    (folder / name).unlink(missing_ok=True)
                    return
                self._replay(journal, snapshot)
                storage.set_extra(self.record.id, {"checkpoint": name})  # durable: the switch-over point
                with self.rw.write():
                    self.model, self._trained, self._trained_version = snapshot, True, version
                    old, self._checkpoint = self._checkpoint, name
            if old is not None:
                (folder / old).unlink(missing_ok=True)

        return work, len(snapshot), total

    def _replay(self, journal: list[tuple[str, list[Fact]]], model: BoxE) -> None:
        """Apply to ``model`` what changed since the job's snapshot (caller holds ``writing``,
        so that nothing changes meanwhile)."""
        with self._journal_lock:
            changes = list(journal)
        for op, facts in changes:
            if op == "add":
                model.add_facts(facts)
            else:
                model.remove_facts(facts)

    def training_ended(self, status: str) -> None:
        with self._journal_lock:
            self._journals.popleft()  # the oldest job's: jobs end in the order they were made

    # --- restart ------------------------------------------------------------------------
    def restore(self, storage: Storage) -> None:
        name = self.record.extra.get("checkpoint")
        folder = storage.checkpoint_dir(self.record.id)
        model = None
        if name:
            try:
                model = BoxE.load(folder / name, device=self.device)
            except (OSError, ValueError) as exc:  # storage names it, so this is damage
                self._model_fault = (
                    f"its model checkpoint {name} is damaged ({exc}); its facts are kept: "
                    "POST .../train makes a new model"
                )
                log.error("memory %r: %s", self.name, self._model_fault)
                name = None
        stored = _all_facts(storage, self.record.id)
        if model is None:
            self.model = self._new_model()
            self.model.add_facts(stored)
        else:
            have, want = set(model.stored_facts()), set(stored)
            changed = model.remove_facts(list(have - want)) + model.add_facts(
                [f for f in stored if f not in have]
            )
            self.model, self._trained, self._checkpoint = model, True, name
            self._version, self._trained_version = int(changed > 0), 0
        for leftover in folder.glob(f"{self.kind}-*.safetensors"):  # written, never switched to
            if leftover.name != name:
                leftover.unlink(missing_ok=True)


def _all_facts(storage: Storage, memory_id: int, page: int = 10_000) -> list[Fact]:
    """Every stored fact of a memory, in storage order."""
    out: list[Fact] = []
    after = -1
    while rows := storage.page_facts(memory_id, after, page):
        out += [(row.relation, row.args) for row in rows]
        after = rows[-1].seq
    return out
