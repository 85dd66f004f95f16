"""Request and response models of REST API v1 (DESIGN.md), with OpenAPI examples.

Images travel as base64 strings of PNG or JPEG files (a ``data:image/png;base64,``
prefix is accepted); vectors as JSON arrays of numbers. Limits that depend on the
settings (batch size, dimensions, pixels) are checked by the service, not here, so
that they follow ``AMS_*`` settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

_PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="


class _Model(BaseModel):
    """Request bodies: unknown fields refused, and no lax coercion ("1" or 0 for a bool)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --- errors ---------------------------------------------------------------------------
class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. memory_not_found")
    message: str = Field(description="what was wrong, for people")
    details: Any = Field(None, description="structured details, e.g. validation errors")


class ErrorResponse(BaseModel):
    """Every 4xx (and the 503 of /readyz) has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "memory_not_found",
                        "message": "no memory named 'fashion'",
                        "details": None,
                    }
                }
            ]
        }
    )
    error: ErrorBody


# --- health and info ------------------------------------------------------------------
class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: str = Field(examples=["ok"])


class Limits(BaseModel):
    max_request_bytes: int
    max_image_pixels: int
    max_batch: int
    max_dim: int
    max_page: int
    max_k: int
    max_steps: int
    max_epochs: int = Field(description="most epochs of a training job (AMS_MAX_EPOCHS)")
    max_solver_steps: int = Field(description="largest *_steps or *_iters of a config (AMS_MAX_SOLVER_STEPS)")
    max_text_chars: int = Field(description="longest caption or text query (AMS_MAX_TEXT_CHARS)")
    memory_budget_bytes: int = Field(description="the memory budget of memories, requests and jobs")
    memory_free_bytes: int = Field(description="what is free of it now")
    rate_limit: float = Field(description="requests per second per API key or client; 0 = no limit")


class Info(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "0.1.0",
                    "device": "cpu",
                    "cuda": False,
                    "kinds": ["hopfield"],
                    "similarities": ["dot", "cosine", "euclidean", "manhattan", "hamming"],
                    "separations": ["identity", "softmax", "polynomial", "max", "topk", "threshold"],
                    "default_configs": {
                        "hopfield": {"similarity": "euclidean", "separation": "softmax", "beta": 100.0}
                    },
                    "limits": {
                        "max_request_bytes": 33554432,
                        "max_image_pixels": 16000000,
                        "max_batch": 1024,
                        "max_dim": 1048576,
                        "max_page": 1000,
                        "max_k": 100,
                        "max_steps": 100,
                        "max_epochs": 100000,
                        "max_solver_steps": 10000,
                        "max_text_chars": 2000,
                        "memory_budget_bytes": 8589934592,
                        "memory_free_bytes": 8455716864,
                        "rate_limit": 0.0,
                    },
                    "auth": False,
                }
            ]
        }
    )
    version: str
    device: str
    cuda: bool
    kinds: list[str]
    similarities: list[str]
    separations: list[str]
    default_configs: dict[str, dict[str, Any]] = Field(description="what `config: {}` resolves to, per kind")
    limits: Limits
    auth: bool = Field(description="whether /v1 needs an API key")


# --- memories -------------------------------------------------------------------------
class MemoryCreate(_Model):
    """A new memory. ``config`` keys are the constructor arguments of the kind's model."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"name": "fashion", "kind": "hopfield", "shape": [1, 28, 28], "config": {}},
                {
                    "name": "embeddings",
                    "kind": "hopfield",
                    "shape": [384],
                    "config": {"similarity": "cosine", "separation": "softmax", "beta": 20.0},
                },
            ]
        },
    )
    name: str = Field(pattern=NAME_PATTERN, description="unique name: letters, digits, _ . -; up to 64")
    kind: str = Field(description="hopfield, pc, pcgraph or relational; see /v1/info", examples=["hopfield"])
    shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="[C, H, W] (C = 1 or 3) for an image memory, [D] for a vector memory; "
        "left out for a relational memory (it stores facts)",
    )
    text: bool = Field(False, description="cross-modal memory: patterns carry a caption (`text`)")
    config: dict[str, Any] = Field(
        default_factory=dict, description="constructor arguments; {} = good defaults"
    )


class MemoryDetails(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "fashion",
                    "kind": "hopfield",
                    "shape": [1, 28, 28],
                    "dim": 784,
                    "text": False,
                    "config": {
                        "similarity": "euclidean",
                        "separation": "softmax",
                        "beta": 100.0,
                        "n": 2.0,
                        "k": 5,
                        "radius": 0.0,
                    },
                    "count": 1000,
                    "state": "ready",
                    "trained_count": 1000,
                    "created_at": "2025-01-01T12:00:00Z",
                }
            ]
        }
    )
    name: str
    kind: str
    shape: list[int] = Field(description="[C, H, W] or [D]; [] for a relational memory")
    dim: int = Field(description="D = C*H*W, the length of a pattern's vector; 0 for a relational memory")
    text: bool
    config: dict[str, Any] = Field(description="the resolved constructor arguments")
    count: int = Field(description="stored patterns (a relational memory: stored facts)")
    state: Literal["ready", "untrained", "training", "stale", "failed"] = Field(
        description="hopfield: ready; pc, pcgraph, relational: untrained, training, ready or stale; "
        "any kind: failed (recovery could not rebuild it, or its model checkpoint is damaged: see `error`)"
    )
    trained_count: int = Field(
        description="stored patterns (facts) the model has learned (hopfield: all of them)"
    )
    created_at: datetime
    error: str | None = Field(None, description="why the memory failed (state failed), else null")
    placement: list[dict[str, Any]] | None = Field(
        None,
        exclude_if=lambda value: value is None,  # one process: not in the answer at all
        description="Ray mode only: the memory's shards (hopfield) or recall replicas (trained "
        "kinds), each with role, index, actor, state (up/down), patterns, bytes, node (host name), "
        "node_ip (Ray node address), node_id, pid, device and, for a shard, file (its SQLite file)",
    )


class MemoryList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "memories": [
                        {
                            "name": "digits",
                            "kind": "hopfield",
                            "shape": [64],
                            "dim": 64,
                            "text": False,
                            "config": {
                                "similarity": "euclidean",
                                "separation": "softmax",
                                "beta": 5.0,
                                "n": 2.0,
                                "k": 5,
                                "radius": 0.0,
                            },
                            "count": 300,
                            "state": "ready",
                            "trained_count": 300,
                            "created_at": "2025-01-01T12:00:00Z",
                        }
                    ]
                }
            ]
        }
    )
    memories: list[MemoryDetails]


# --- patterns -------------------------------------------------------------------------
class PatternIn(_Model):
    """One pattern: a ``vector`` (length D) or an ``image`` (base64 PNG/JPEG), never both."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="your id; generated when absent")
    vector: list[float] | None = Field(None, description="D numbers (an image memory takes C*H*W, C-major)")
    image: str | None = Field(None, description="base64 PNG or JPEG; only for image memories")
    text: str | None = Field(None, description="caption (kept for cross-modal memories)")
    metadata: dict[str, Any] | None = Field(None, description="any JSON object, returned with the pattern")


class StorePatterns(_Model):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"patterns": [{"id": "shoe-1", "image": _PNG_1x1, "metadata": {"label": "Sneaker"}}]},
                {"patterns": [{"vector": [0.1, 0.9, 0.0, 0.4]}, {"id": "b", "vector": [0.7, 0.2, 0.5, 0.1]}]},
            ]
        },
    )
    patterns: list[PatternIn] = Field(min_length=1, description="the batch (at most AMS_MAX_BATCH)")


class StoreResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ids": ["shoe-1"], "count": 1001}]})
    ids: list[str] = Field(description="the stored patterns' ids, in request order; durable on return")
    count: int = Field(description="patterns in the memory after this store")


class PatternSummary(BaseModel):
    id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None


class PatternPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "patterns": [{"id": "shoe-1", "text": None, "metadata": {"label": "Sneaker"}}],
                    "next_cursor": "MTI",
                }
            ]
        }
    )
    patterns: list[PatternSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class PatternOut(BaseModel):
    """A stored pattern: ``image`` (base64 PNG) for image memories, ``vector`` for vector memories."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "shoe-1",
                    "text": None,
                    "metadata": {"label": "Sneaker"},
                    "vector": None,
                    "image": _PNG_1x1,
                },
                {"id": "b", "text": "seven", "metadata": None, "vector": [0.7, 0.2, 0.5, 0.1], "image": None},
            ]
        }
    )

    id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None
    image: str | None = None


# --- recall ---------------------------------------------------------------------------
class RetrieveRequest(_Model):
    """A corrupted cue: ``vector`` or ``image``, and optionally which entries are known."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"vector": [0.1, 0.8, 0.0, 0.5], "mask": [True, True, False, False], "k": 3},
                {"image": _PNG_1x1, "k": 1},
            ]
        },
    )
    vector: list[float] | None = Field(None, description="D numbers; unknown entries may hold anything")
    image: str | None = Field(
        None,
        description="base64 PNG/JPEG, fitted to the memory's shape; "
        "an RGBA image's alpha 0 marks unknown pixels",
    )
    mask: list[bool] | str | None = Field(
        None,
        description="True = known: D booleans (or H*W for an image memory), or a base64 mask "
        "picture (white = known, or alpha 0 = unknown)",
    )
    k: int = Field(3, ge=1, description="how many stored matches to name (at most AMS_MAX_K)")
    steps: int = Field(1, ge=1, description="iterated retrieval steps (hopfield; at most AMS_MAX_STEPS)")
    include_vector: bool = Field(False, description="image memories: also return the result as a vector")


class CompleteRequest(_Model):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"image": _PNG_1x1, "mask": _PNG_1x1}]}
    )
    image: str = Field(description="base64 PNG/JPEG; an RGBA image's alpha 0 marks the unknown pixels")
    mask: str | None = Field(None, description="base64 mask picture: white = known, black = to fill")
    k: int = Field(3, ge=1, description="how many stored matches to name")


class Match(BaseModel):
    id: str
    score: float = Field(description="similarity to the result (distances negated: 0 = identical)")


class RecalledPattern(BaseModel):
    vector: list[float] | None = Field(None, description="the result (vector memories, or include_vector)")
    image: str | None = Field(None, description="the result as a base64 PNG (image memories)")


class NearestStored(BaseModel):
    id: str = Field(
        description="the stored pattern the recall landed on (index), or the one nearest the output "
        "(pure recall); may name a pattern deleted since training"
    )
    mse: float | None = Field(description="mean squared error of the output to it (null: deleted since)")
    evidence: float | None = Field(
        description="the index's stored-pattern test on the cue's known entries: <= 1 passes (null: pure recall)"
    )


class RecallReport(BaseModel):
    """What a pc memory's recall did (kind pc only)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": True,
                    "stored": True,
                    "unique": True,
                    "rounds": 2,
                    "nearest": {"id": "boot", "mse": 0.0004, "evidence": 0.93},
                }
            ]
        }
    )
    index: bool = Field(description="the memory index was used (false: the paper's pure recall)")
    stored: bool = Field(
        description="the output is the network's reconstruction of the stored pattern `nearest` "
        "(false: of something not stored, e.g. an unseen image or one stored since the last training)"
    )
    unique: bool = Field(description="stored, and no other stored pattern explains the cue as well")
    rounds: int | None = Field(description="rounds of recall F the index took (null: pure recall)")
    nearest: NearestStored


_RECALL_FIELD = Field(None, description="kind pc: what the recall did (null for other kinds)")


class RetrieveResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "pattern": {"vector": [0.1, 0.9, 0.0, 0.4], "image": None},
                    "matches": [{"id": "a", "score": -0.0}, {"id": "b", "score": -1.8}],
                    "energy": 0.0,
                    "state": "ready",
                    "trained_count": 2,
                    "recall": None,
                }
            ]
        }
    )
    pattern: RecalledPattern
    matches: list[Match] = Field(description="the stored patterns nearest the result, best first")
    energy: float = Field(description="energy of the result (lower = closer to what is stored)")
    state: str = Field(description="the memory's state when it answered")
    trained_count: int = Field(description="stored patterns the recall model had learned")
    recall: RecallReport | None = _RECALL_FIELD


class CompleteResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": _PNG_1x1,
                    "matches": [{"id": "shoe-1", "score": -3.2}],
                    "energy": 3.2,
                    "state": "ready",
                    "trained_count": 1000,
                    "unknown_pixels": 392,
                }
            ]
        }
    )
    image: str = Field(
        description="the completed picture, base64 PNG: known pixels as given, the rest filled"
    )
    matches: list[Match]
    energy: float
    state: str
    trained_count: int
    unknown_pixels: int = Field(description="how many pixels were filled")
    recall: RecallReport | None = _RECALL_FIELD


# --- jobs -----------------------------------------------------------------------------
class TrainRequest(_Model):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"epochs": 300}]})
    epochs: int | None = Field(
        None, ge=1, le=100_000, description="training epochs; null = the model's default"
    )


class Job(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c0e5b7d4c1a",
                    "memory": "patches",
                    "kind": "train",
                    "status": "running",
                    "progress": 0.42,
                    "epoch": 126,
                    "epochs": 300,
                    "energy": 0.13,
                    "eta_seconds": 21.5,
                    "patterns": 32,
                    "created_at": "2025-01-01T12:00:00Z",
                    "started_at": "2025-01-01T12:00:01Z",
                    "finished_at": None,
                    "error": None,
                    "stop_reason": None,
                }
            ]
        }
    )
    id: str
    memory: str
    kind: str = Field(description="train, or demo (the load of a demo memory, POST /v1/demo)")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="0..1")
    epoch: int
    epochs: int | None
    energy: float | None = Field(description="the last epoch's energy")
    eta_seconds: float | None = Field(description="estimated seconds left, from the pace so far")
    patterns: int = Field(description="patterns this job trains on")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    stop_reason: Literal["epochs", "energy", "done", "cancelled", "failed"] | None = Field(
        None,
        description="why a finished job ended: `epochs` (trained every epoch asked for), `energy` "
        "(training reached the model's stop energy, then annealed and stopped early), `done` (a demo "
        "load stored every pattern), `cancelled`, `failed` (see `error`); null while unfinished",
    )


class JobList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"jobs": []}]})
    jobs: list[Job]


# --- cross-modal lookup -----------------------------------------------------------------
class LookupRequest(_Model):
    """A text query (-> patterns) or a pattern query (-> captions) for a ``text: true`` memory."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"text": "a red motorcycle parked in a garage", "k": 3},
                {"image": _PNG_1x1, "mask": _PNG_1x1, "k": 3},
            ]
        },
    )
    text: str | None = Field(None, min_length=1, description="a caption to find patterns for")
    image: str | None = Field(
        None, description="base64 PNG/JPEG (image memories); an RGBA image's alpha 0 marks unknown pixels"
    )
    vector: list[float] | None = Field(None, description="D numbers (vector memories)")
    mask: list[bool] | str | None = Field(
        None,
        description="for image/vector queries, True = known: D (or H*W) booleans, or a base64 mask picture",
    )
    k: int = Field(5, ge=1, description="how many patterns or captions to return (at most AMS_MAX_K)")


class LookupPattern(BaseModel):
    id: str
    text: str | None = Field(None, description="the pattern's stored caption")
    score: float = Field(description="the memory's similarity between the query and this caption")
    image: str | None = Field(None, description="the stored picture, base64 PNG (image memories)")
    vector: list[float] | None = Field(None, description="the stored vector (vector memories)")


class LookupCaption(BaseModel):
    id: str = Field(description="the pattern the caption belongs to")
    text: str | None
    score: float = Field(description="cosine between the completed caption part and this caption")


class LookupResult(BaseModel):
    """Text query: ``completion`` (the pattern the memory completes) and ``patterns`` (the
    stored pairs whose captions fit the query best). Pattern query: ``captions`` (the stored
    captions nearest the caption part the memory completes)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "text",
                    "completion": {"vector": None, "image": _PNG_1x1},
                    "patterns": [
                        {
                            "id": "motorcycle",
                            "text": "a red motorcycle parked in a garage",
                            "score": -510.3,
                            "image": _PNG_1x1,
                            "vector": None,
                        }
                    ],
                    "captions": None,
                    "energy": 503.2,
                    "state": "ready",
                    "trained_count": 69,
                },
                {
                    "query": "image",
                    "completion": None,
                    "patterns": None,
                    "captions": [{"id": "cat", "text": "a tabby cat with big green eyes", "score": 0.998}],
                    "energy": 0.0,
                    "state": "ready",
                    "trained_count": 69,
                },
            ]
        }
    )
    query: Literal["text", "image", "vector"]
    completion: RecalledPattern | None = None
    patterns: list[LookupPattern] | None = None
    captions: list[LookupCaption] | None = None
    energy: float
    state: str
    trained_count: int
