"""Typed results of the relational memories' calls (``_facts.py``): facts, query answers,
the vocabulary. Re-exported by ``ams_client.models``, whose ``SCHEMAS`` names the OpenAPI
schema (``app/fact_schemas.py``) each mirrors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "Fact", "FactsStored", "QueryResult", "Relation", "Vocabulary"]


@dataclass(frozen=True)
class Fact:
    """A stored fact ``relation(*args)`` and its id (``facts()``, ``get_fact``). ``store_facts``
    takes these back as they are (a copy of one memory into another, say)."""

    id: int
    relation: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.relation}({', '.join(self.args)})"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fact:
        return cls(id=int(d["id"]), relation=d["relation"], args=tuple(d["args"]))


@dataclass(frozen=True)
class FactsStored:
    """``store_facts``: each fact's id in input order (a fact stored before keeps its id), how
    many were new, and the memory's count of facts after (durable on return)."""

    ids: list[int]
    new: int
    count: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FactsStored:
        return cls(ids=[int(i) for i in d["ids"]], new=int(d["new"]), count=int(d["count"]))


@dataclass(frozen=True)
class Candidate:
    """An entity ranked as a query's missing argument: the model's score of the completed
    fact (higher is truer, 0 best) and whether that fact is stored (``known``)."""

    entity: str
    score: float
    known: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Candidate:
        return cls(entity=d["entity"], score=float(d["score"]), known=bool(d["known"]))


@dataclass(frozen=True, eq=False)
class QueryResult:
    """``query``: the candidates, best first (those the rules prove false last), the memory's
    state when it answered and how many facts its model had learned."""

    candidates: list[Candidate]
    state: str
    trained_count: int
    raw: dict[str, Any] = field(repr=False)

    @property
    def entities(self) -> list[str]:
        """The candidates' entities, best first."""
        return [c.entity for c in self.candidates]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueryResult:
        return cls(
            candidates=[Candidate.from_json(c) for c in d["candidates"]],
            state=d["state"],
            trained_count=d["trained_count"],
            raw=d,
        )


@dataclass(frozen=True)
class Relation:
    """A relation a memory knows and its arity (the number of arguments of its facts)."""

    name: str
    arity: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Relation:
        return cls(name=d["name"], arity=int(d["arity"]))


@dataclass(frozen=True)
class Vocabulary:
    """``vocabulary``: every relation (with its arity; the rules' included) and every entity a
    relational memory knows, in the order they were first used (all pages of the answer)."""

    relations: list[Relation]
    entities: list[str]
    entity_count: int

    @property
    def arity(self) -> dict[str, int]:
        """Relation name -> arity."""
        return {r.name: r.arity for r in self.relations}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Vocabulary:
        return cls(
            relations=[Relation.from_json(r) for r in d["relations"]],
            entities=list(d["entities"]),
            entity_count=int(d["entity_count"]),
        )
