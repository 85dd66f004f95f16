"""Request and response models of the relational memories' endpoints (``api/facts.py``).

Kept apart from ``schemas.py`` (the pattern memories' models) so that each stays a module
of one subject. Names of relations and entities are any text of 1 to 200 characters
without control characters; a fact has 1 to ``MAX_ARITY`` arguments.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .schema_base import StrictModel

__all__ = [
    "MAX_ARITY",
    "CandidateOut",
    "FactIn",
    "FactOut",
    "FactPage",
    "FactsStored",
    "QueryRequest",
    "QueryResult",
    "RelationOut",
    "StoreFacts",
    "Vocabulary",
]

MAX_ARITY = 16  # arguments of a fact: the model's box tables are (relations, MAX_ARITY, dim)
NAME_TEXT = r"^[^\x00-\x1f\x7f]{1,200}$"

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_TEXT)]


class FactIn(StrictModel):
    relation: Name = Field(description="the relation's name; created on first use", examples=["borders"])
    args: list[Name] = Field(
        min_length=1,
        max_length=MAX_ARITY,
        description="the arguments' entity names, in order; a relation's arity is fixed by its first fact",
        examples=[["france", "spain"]],
    )


class StoreFacts(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "facts": [
                        {"relation": "borders", "args": ["france", "spain"]},
                        {"relation": "capital_of", "args": ["paris", "france"]},
                    ]
                }
            ]
        },
    )
    facts: list[FactIn] = Field(min_length=1, description="the batch (at most AMS_MAX_BATCH facts)")


class FactsStored(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ids": [1, 2], "new": 2, "count": 2}]})
    ids: list[int] = Field(description="each fact's id, in request order (a fact stored before keeps its id)")
    new: int = Field(description="how many of them were not stored before")
    count: int = Field(description="facts in the memory after this store; durable on return")


class FactOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": 1, "relation": "borders", "args": ["france", "spain"]}]}
    )
    id: int
    relation: str
    args: list[str]


class FactPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "facts": [{"id": 1, "relation": "borders", "args": ["france", "spain"]}],
                    "next_cursor": "MQ",
                }
            ]
        }
    )
    facts: list[FactOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class QueryRequest(StrictModel):
    """A fact with one argument missing (null): which entities complete it, best first."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"relation": "borders", "args": ["france", None], "k": 5},
                {"relation": "capital_of", "args": [None, "italy"], "filter_known": True},
            ]
        },
    )
    relation: Name = Field(description="a relation the memory knows")
    args: list[Name | None] = Field(
        min_length=1, max_length=MAX_ARITY, description="the relation's arguments, exactly one of them null"
    )
    k: int = Field(10, ge=1, description="how many candidates (more than there are entities gives all)")
    filter_known: bool = Field(False, description="leave out the entities that complete a stored fact")


class CandidateOut(BaseModel):
    entity: str
    score: float = Field(description="the model's score of the completed fact: higher is truer, 0 best")
    known: bool = Field(description="the completed fact is stored")


class QueryResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "candidates": [
                        {"entity": "spain", "score": -0.41, "known": True},
                        {"entity": "italy", "score": -0.52, "known": True},
                    ],
                    "state": "ready",
                    "trained_count": 165,
                }
            ]
        }
    )
    candidates: list[CandidateOut] = Field(
        description="best first; candidates the rules prove false (an exclusion) come last"
    )
    state: str = Field(description="the memory's state when it answered")
    trained_count: int = Field(description="facts the model had learned")


class RelationOut(BaseModel):
    name: str
    arity: int


class Vocabulary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "relations": [{"name": "borders", "arity": 2}],
                    "entities": ["france", "spain"],
                    "entity_count": 2,
                    "next_cursor": None,
                }
            ]
        }
    )
    relations: list[RelationOut] = Field(description="every relation (rules' relations included)")
    entities: list[str] = Field(description="a page of entity names, in the order they were first used")
    entity_count: int = Field(description="entities in all")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page of entities")
