"""Request and response models of REST API v1 (DESIGN.md), with OpenAPI examples.

Images travel as base64 strings of PNG or JPEG files (a ``data:image/png;base64,``
prefix is accepted); vectors as JSON arrays of numbers. Limits that depend on the
settings (batch size, dimensions, pixels) are checked by the service, not here, so
that they follow ``AMS_*`` settings.

Recall and lookup models are in ``recall_schemas.py``, what every model shares in
``schema_base.py``; both are re-exported here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .recall_schemas import (
    CompleteRequest,
    CompleteResult,
    LookupCaption,
    LookupPattern,
    LookupRequest,
    LookupResult,
    Match,
    NearestStored,
    RecalledPattern,
    RecallReport,
    RetrieveRequest,
    RetrieveResult,
)
from .schema_base import ID_PATTERN, NAME_PATTERN, PNG_1x1, StrictModel

__all__ = [
    "ID_PATTERN",
    "NAME_PATTERN",
    "CompleteRequest",
    "CompleteResult",
    "ErrorBody",
    "ErrorResponse",
    "Health",
    "Info",
    "Job",
    "JobList",
    "Limits",
    "LookupCaption",
    "LookupPattern",
    "LookupRequest",
    "LookupResult",
    "Match",
    "MemoryCreate",
    "MemoryDetails",
    "MemoryList",
    "NearestStored",
    "PatternIn",
    "PatternOut",
    "PatternPage",
    "PatternSummary",
    "RecallReport",
    "RecalledPattern",
    "RetrieveRequest",
    "RetrieveResult",
    "StorePatterns",
    "StoreResult",
    "TrainRequest",
]


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
class MemoryCreate(StrictModel):
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
                    "count_complete": True,
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
    count_complete: bool = Field(
        True,
        description="whether `count` is every pattern's; false in the Ray mode while a shard is "
        "down (see its `placement` entry): `count` then has the up shards' patterns and, for a shard "
        "down, what it held when last heard from (nothing if not since the gateway started). "
        "Always true in one process",
    )
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
                            "count_complete": True,
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
class PatternIn(StrictModel):
    """One pattern: a ``vector`` (length D) or an ``image`` (base64 PNG/JPEG), never both."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="your id; generated when absent")
    vector: list[float] | None = Field(None, description="D numbers (an image memory takes C*H*W, C-major)")
    image: str | None = Field(None, description="base64 PNG or JPEG; only for image memories")
    text: str | None = Field(None, description="caption (kept for cross-modal memories)")
    metadata: dict[str, Any] | None = Field(None, description="any JSON object, returned with the pattern")


class StorePatterns(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"patterns": [{"id": "shoe-1", "image": PNG_1x1, "metadata": {"label": "Sneaker"}}]},
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
                    "image": PNG_1x1,
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


# --- jobs -----------------------------------------------------------------------------
class TrainRequest(StrictModel):
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
