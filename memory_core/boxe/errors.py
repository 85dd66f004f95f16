"""Errors of the relational memory, one class per failure (the service maps them to 4xx).

Each subclasses the built-in exception a Python caller would expect (KeyError for an
unknown name, ValueError for a bad value), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ArityError",
    "BoxEError",
    "RuleConflictError",
    "RuleError",
    "UnknownEntityError",
    "UnknownRelationError",
]


class BoxEError(Exception):
    """Base class of the relational memory's errors."""


class _UnknownName(BoxEError, KeyError):
    kind = "name"

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:  # KeyError's own str() would quote the whole message
        return f"unknown {self.kind} {self.name!r}"


class UnknownRelationError(_UnknownName):
    """A query or rule names a relation the memory has never seen."""

    kind = "relation"


class UnknownEntityError(_UnknownName):
    """A query names an entity the memory has never seen."""

    kind = "entity"


class ArityError(BoxEError, ValueError):
    """A fact, query or rule gives a relation another number of arguments than it has."""


class RuleError(BoxEError, ValueError):
    """A rule is malformed (unknown type, missing field, wrong arity for its type)."""


class RuleConflictError(RuleError):
    """The rules contradict each other: some relation could hold for no arguments at all."""
