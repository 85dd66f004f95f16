"""Typed results: the service's JSON answers as dataclasses, arrays as numpy, pictures as PIL.

Each model names the OpenAPI schema it mirrors (``SCHEMAS``); a test checks against the
running service's /openapi.json that every property of those schemas is a field here, so
a field the service adds cannot go unnoticed. Unknown fields in an answer are ignored (an
older client keeps working against a newer service). ``raw`` keeps the answer as sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

import numpy as np
from PIL import Image

from .codec import decode_png, image_array
from .fact_models import Candidate, Fact, FactsStored, QueryResult, Relation, Vocabulary

__all__ = [
    "SCHEMAS",
    "Candidate",
    "CompleteResult",
    "DemoPreset",
    "Fact",
    "FactsStored",
    "Info",
    "JobState",
    "Limits",
    "LookupCaption",
    "LookupPattern",
    "LookupResult",
    "Match",
    "Memory",
    "NearestStored",
    "Pattern",
    "PatternInfo",
    "QueryResult",
    "RecallReport",
    "Recalled",
    "Relation",
    "RetrieveResult",
    "StopReason",
    "StoreResult",
    "Vocabulary",
]


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _vector(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


def _picture(data: str | None) -> Image.Image | None:
    return None if data is None else decode_png(data)


class _Pictured:
    """``array``: the pattern as numbers, (D,) for a vector, (C, H, W) in [0, 1] for a picture
    (from the exact vector when the answer has one, else from the 8-bit PNG)."""

    vector: np.ndarray | None
    image: Image.Image | None

    @property
    def array(self) -> np.ndarray:
        if self.vector is not None:
            if self.image is not None:
                return self.vector.reshape(image_array(self.image).shape)
            return self.vector
        if self.image is not None:
            return image_array(self.image)
        raise ValueError("the answer holds no pattern")


@dataclass(frozen=True)
class Limits:
    """The service's limits (AMS_* settings): bytes, pixels, patterns per store, ..."""

    max_request_bytes: int
    max_image_pixels: int
    max_batch: int
    max_dim: int
    max_page: int
    max_k: int
    max_steps: int
    # Newer services say these too (None from one that does not).
    max_epochs: int | None = None
    max_solver_steps: int | None = None
    max_text_chars: int | None = None
    memory_budget_bytes: int | None = None
    memory_free_bytes: int | None = None
    rate_limit: float | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Limits:
        return cls(
            **{k: (float if k == "rate_limit" else int)(d[k]) for k in cls.__dataclass_fields__ if k in d}
        )


@dataclass(frozen=True)
class Info:
    """``GET /v1/info``: version, device, what memories can be made of, limits, auth."""

    version: str
    device: str
    cuda: bool
    kinds: list[str]
    similarities: list[str]
    separations: list[str]
    default_configs: dict[str, dict[str, Any]]
    limits: Limits
    auth: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Info:
        return cls(
            version=d["version"],
            device=d["device"],
            cuda=d["cuda"],
            kinds=list(d["kinds"]),
            similarities=list(d["similarities"]),
            separations=list(d["separations"]),
            default_configs=d["default_configs"],
            limits=Limits.from_json(d["limits"]),
            auth=d["auth"],
            raw=d,
        )


@dataclass(frozen=True)
class Memory:
    """A memory: kind, shape ((C, H, W) for pictures, (D,) for vectors, () and ``dim`` 0 for a
    relational memory), resolved config, count (patterns, or a relational memory's facts),
    state (ready, untrained, training, stale, failed) and how many of them its model learned;
    ``error`` says why a failed memory failed; on a service in the Ray mode, ``placement``: its
    shards or replicas and where they run, and ``count_complete`` False while a shard is down
    (``count`` then misses, or has an old figure for, that shard's patterns; ``shards_down``)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    dim: int
    text: bool
    config: dict[str, Any]
    count: int
    state: str
    trained_count: int
    created_at: datetime
    raw: dict[str, Any] = field(repr=False, compare=False)
    error: str | None = None
    placement: list[dict[str, Any]] | None = None
    count_complete: bool = True

    @property
    def shards_down(self) -> int:
        """How many of its shards are down (``placement``; 0 in one process)."""
        return sum(p.get("role") == "shard" and p.get("state") != "up" for p in self.placement or [])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def is_relational(self) -> bool:
        """It stores facts (``store_facts``, ``query``), not patterns."""
        return self.kind == "relational"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Memory:
        return cls(
            name=d["name"],
            kind=d["kind"],
            shape=tuple(d["shape"]),
            dim=d["dim"],
            text=d["text"],
            config=d["config"],
            count=d["count"],
            state=d["state"],
            trained_count=d["trained_count"],
            created_at=_time(d["created_at"]),
            raw=d,
            error=d.get("error"),
            placement=d.get("placement"),
            count_complete=d.get("count_complete", True),  # (absent from services before it)
        )


@dataclass(frozen=True)
class StoreResult:
    """The stored patterns' ids in input order (durable on return) and the memory's count after."""

    ids: list[str]
    count: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StoreResult:
        return cls(ids=list(d["ids"]), count=d["count"])


@dataclass(frozen=True)
class PatternInfo:
    """A stored pattern's id, caption and metadata (what ``patterns()`` iterates over)."""

    id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PatternInfo:
        return cls(id=d["id"], text=d.get("text"), metadata=d.get("metadata"))


@dataclass(frozen=True, eq=False)
class Pattern(_Pictured):
    """A stored pattern: ``vector`` (D,) for vector memories, ``image`` (PIL) for image
    memories (8-bit PNG, as the service sends it); ``array`` either way."""

    id: str
    text: str | None
    metadata: dict[str, Any] | None
    vector: np.ndarray | None
    image: Image.Image | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pattern:
        return cls(
            id=d["id"],
            text=d.get("text"),
            metadata=d.get("metadata"),
            vector=_vector(d.get("vector")),
            image=_picture(d.get("image")),
            raw=d,
        )


@dataclass(frozen=True)
class Match:
    """A stored pattern and its similarity to the result (distances negated: 0 = identical)."""

    id: str
    score: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Match:
        return cls(id=d["id"], score=float(d["score"]))


def _matches(items: list[dict[str, Any]]) -> list[Match]:
    return [Match.from_json(m) for m in items]


@dataclass(frozen=True, eq=False)
class Recalled(_Pictured):
    """A pattern the memory produced: ``vector`` (vector memories, or ``include_vector``) and/or
    ``image`` (image memories); ``array`` either way."""

    vector: np.ndarray | None
    image: Image.Image | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Recalled:
        return cls(vector=_vector(d.get("vector")), image=_picture(d.get("image")))


@dataclass(frozen=True)
class NearestStored:
    """The stored pattern a pc recall landed on (or, pure recall, the one nearest its output):
    ``mse`` of the output to it (None: deleted since training), ``evidence`` the index's
    stored-pattern test (<= 1 passes; None: pure recall)."""

    id: str
    mse: float | None
    evidence: float | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NearestStored:
        return cls(id=d["id"], mse=d.get("mse"), evidence=d.get("evidence"))


@dataclass(frozen=True)
class RecallReport:
    """What a pc memory's recall did: ``stored`` (the answer is the network's reconstruction
    of the stored pattern ``nearest``), ``unique`` (no other stored pattern explains the cue
    as well), ``rounds`` of recall, ``index`` (False: the paper's pure recall)."""

    index: bool
    stored: bool
    unique: bool
    rounds: int | None
    nearest: NearestStored

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> RecallReport | None:
        if d is None:
            return None
        return cls(
            index=d["index"],
            stored=d["stored"],
            unique=d["unique"],
            rounds=d.get("rounds"),
            nearest=NearestStored.from_json(d["nearest"]),
        )


@dataclass(frozen=True, eq=False)
class RetrieveResult:
    """``retrieve``: the recalled ``pattern``, the stored ``matches`` nearest it (best first),
    its ``energy`` (lower = closer to what is stored), the memory's state and trained count,
    and for kind pc what the recall did (``recall``; None for other kinds)."""

    pattern: Recalled
    matches: list[Match]
    energy: float
    state: str
    trained_count: int
    recall: RecallReport | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def array(self) -> np.ndarray:
        return self.pattern.array

    @property
    def image(self) -> Image.Image | None:
        return self.pattern.image

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RetrieveResult:
        return cls(
            pattern=Recalled.from_json(d["pattern"]),
            matches=_matches(d["matches"]),
            energy=float(d["energy"]),
            state=d["state"],
            trained_count=d["trained_count"],
            recall=RecallReport.from_json(d.get("recall")),
            raw=d,
        )


@dataclass(frozen=True, eq=False)
class CompleteResult:
    """``complete``: the completed picture (known pixels as given), matches, energy, how
    many pixels were filled, and for kind pc what the recall did (``recall``)."""

    image: Image.Image
    matches: list[Match]
    energy: float
    state: str
    trained_count: int
    unknown_pixels: int
    recall: RecallReport | None
    raw: dict[str, Any] = field(repr=False)

    @cached_property
    def array(self) -> np.ndarray:
        """(C, H, W) float32 in [0, 1]."""
        return image_array(self.image)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompleteResult:
        return cls(
            image=decode_png(d["image"]),
            matches=_matches(d["matches"]),
            energy=float(d["energy"]),
            state=d["state"],
            trained_count=d["trained_count"],
            unknown_pixels=d["unknown_pixels"],
            recall=RecallReport.from_json(d.get("recall")),
            raw=d,
        )


@dataclass(frozen=True, eq=False)
class LookupPattern(_Pictured):
    """A stored pair found by a caption: id, caption, score, and its picture or vector."""

    id: str
    text: str | None
    score: float
    image: Image.Image | None
    vector: np.ndarray | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LookupPattern:
        return cls(
            id=d["id"],
            text=d.get("text"),
            score=float(d["score"]),
            image=_picture(d.get("image")),
            vector=_vector(d.get("vector")),
        )


@dataclass(frozen=True)
class LookupCaption:
    """A stored caption found by a pattern: the pattern's id, the caption, cosine score."""

    id: str
    text: str | None
    score: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LookupCaption:
        return cls(id=d["id"], text=d.get("text"), score=float(d["score"]))


@dataclass(frozen=True, eq=False)
class LookupResult:
    """``lookup``. A text query (``query == "text"``): ``completion``, the pattern the memory
    completes, and ``patterns``, the stored pairs whose captions fit best. A picture or
    vector query: ``captions``, the stored captions nearest what the memory completes."""

    query: str
    completion: Recalled | None
    patterns: list[LookupPattern] | None
    captions: list[LookupCaption] | None
    energy: float
    state: str
    trained_count: int
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LookupResult:
        completion, patterns, captions = d.get("completion"), d.get("patterns"), d.get("captions")
        return cls(
            query=d["query"],
            completion=None if completion is None else Recalled.from_json(completion),
            patterns=None if patterns is None else [LookupPattern.from_json(p) for p in patterns],
            captions=None if captions is None else [LookupCaption.from_json(c) for c in captions],
            energy=float(d["energy"]),
            state=d["state"],
            trained_count=d["trained_count"],
            raw=d,
        )


FINISHED = ("succeeded", "failed", "cancelled")

StopReason = Literal["epochs", "energy", "done", "cancelled", "failed"]
"""Why a finished job ended: ``epochs`` (trained every epoch asked for), ``energy`` (training
reached the model's stop energy and stopped early), ``done`` (a demo load stored every
pattern), ``cancelled``, ``failed`` (see ``error``)."""


@dataclass(eq=False)
class JobState:
    """A background job (training, or a demo load): status (queued, running, succeeded,
    failed, cancelled), progress 0..1, epoch of epochs, last energy, ETA in seconds, and
    once finished why it ended (``stop_reason``, a ``StopReason``; None while unfinished)."""

    id: str
    memory: str
    kind: str
    status: str
    progress: float
    epoch: int
    epochs: int | None
    energy: float | None
    eta_seconds: float | None
    patterns: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    stop_reason: StopReason | None

    @property
    def done(self) -> bool:
        """True once the job has finished (succeeded, failed or cancelled)."""
        return self.status in FINISHED

    @staticmethod
    def fields_from_json(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": d["id"],
            "memory": d["memory"],
            "kind": d["kind"],
            "status": d["status"],
            "progress": float(d["progress"]),
            "epoch": d["epoch"],
            "epochs": d.get("epochs"),
            "energy": d.get("energy"),
            "eta_seconds": d.get("eta_seconds"),
            "patterns": d["patterns"],
            "created_at": _time(d["created_at"]),
            "started_at": _time(d.get("started_at")),
            "finished_at": _time(d.get("finished_at")),
            "error": d.get("error"),
            "stop_reason": d.get("stop_reason"),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobState:
        return cls(**cls.fields_from_json(d))


@dataclass(frozen=True)
class DemoPreset:
    """A demo data set ``create_demo`` can load (``GET /v1/demo``): its memory's kind by
    default (a relational preset, a knowledge base, takes no other) and shape (() for facts)."""

    name: str
    title: str
    description: str
    kind: str
    shape: tuple[int, ...]
    text: bool
    default_count: int
    max_count: int
    memory_name: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DemoPreset:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__} | {"shape": tuple(d["shape"])})


# The OpenAPI schema each model mirrors (checked against the service's /openapi.json).
SCHEMAS: dict[str, type] = {
    "Limits": Limits,
    "Info": Info,
    "MemoryDetails": Memory,
    "StoreResult": StoreResult,
    "PatternSummary": PatternInfo,
    "PatternOut": Pattern,
    "Match": Match,
    "RecalledPattern": Recalled,
    "RetrieveResult": RetrieveResult,
    "CompleteResult": CompleteResult,
    "RecallReport": RecallReport,
    "NearestStored": NearestStored,
    "LookupPattern": LookupPattern,
    "LookupCaption": LookupCaption,
    "LookupResult": LookupResult,
    "Job": JobState,
    "DemoPreset": DemoPreset,
    "FactOut": Fact,
    "FactsStored": FactsStored,
    "CandidateOut": Candidate,
    "QueryResult": QueryResult,
    "RelationOut": Relation,
    "Vocabulary": Vocabulary,
}
PAGING = frozenset({"next_cursor"})
"""Properties the client handles itself: iterators and merged pages hide the cursors."""
