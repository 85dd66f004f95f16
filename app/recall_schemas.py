"""Request and response models of recall (``/retrieve``, ``/complete``) and of the
cross-modal lookup (``/lookup``), with OpenAPI examples (DESIGN.md, REST API v1).

Kept apart from ``schemas.py`` (memories, patterns, jobs, health), which re-exports them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .schema_base import PNG_1x1, StrictModel

__all__ = [
    "CompleteRequest",
    "CompleteResult",
    "LookupCaption",
    "LookupPattern",
    "LookupRequest",
    "LookupResult",
    "Match",
    "NearestStored",
    "RecallReport",
    "RecalledPattern",
    "RetrieveRequest",
    "RetrieveResult",
]


# --- recall ---------------------------------------------------------------------------
class RetrieveRequest(StrictModel):
    """A corrupted cue: ``vector`` or ``image``, and optionally which entries are known."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"vector": [0.1, 0.8, 0.0, 0.5], "mask": [True, True, False, False], "k": 3},
                {"image": PNG_1x1, "k": 1},
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


class CompleteRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"image": PNG_1x1, "mask": PNG_1x1}]}
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
                    "image": PNG_1x1,
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


# --- cross-modal lookup -----------------------------------------------------------------
class LookupRequest(StrictModel):
    """A text query (-> patterns) or a pattern query (-> captions) for a ``text: true`` memory."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"text": "a red motorcycle parked in a garage", "k": 3},
                {"image": PNG_1x1, "mask": PNG_1x1, "k": 3},
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
                    "completion": {"vector": None, "image": PNG_1x1},
                    "patterns": [
                        {
                            "id": "motorcycle",
                            "text": "a red motorcycle parked in a garage",
                            "score": -510.3,
                            "image": PNG_1x1,
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
