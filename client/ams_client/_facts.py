"""The operations of relational memories (kind ``relational``): store facts, read and delete
them, complete a fact with one missing argument, read the vocabulary. Training is
``train``, as for the other kinds that train (``_ops``).

A fact is ``relation(arg_1, ..., arg_n)`` over names (any text of 1 to 200 characters
without control characters; the service checks them); a relation's arity is fixed by its
first fact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._core import Op, operation, page_params, path
from ._upload import Uploads
from .fact_models import Fact, FactsStored, QueryResult, Relation, Vocabulary

FACTS = "/v1/memories/{name}/facts"
FACT = "/v1/memories/{name}/facts/{fact_id}"
QUERY = "/v1/memories/{name}/query"
VOCABULARY = "/v1/memories/{name}/vocabulary"

FactLike = Fact | Mapping[str, Any] | Sequence[str]
"""A fact as ``store_facts`` takes it: ``(relation, arg_1, ..., arg_n)``, a mapping
``{"relation": ..., "args": [...]}`` (the REST shape; an ``id`` in it is ignored), or a ``Fact``."""


def _parts(fact: Any, index: int) -> tuple[Any, Any]:
    """(relation, args) of one fact in any form ``store_facts`` takes."""
    if isinstance(fact, Fact):
        return fact.relation, list(fact.args)
    if isinstance(fact, Mapping):
        unknown = sorted(set(fact) - {"relation", "args", "id"})
        if unknown or "relation" not in fact or "args" not in fact:
            raise ValueError(
                f"fact {index}: a mapping needs 'relation' and 'args' and nothing else, got keys {sorted(fact)}"
            )
        args = fact["args"]
        if isinstance(args, str) or not isinstance(args, Sequence):
            raise TypeError(f"fact {index}: 'args' must be a list of entity names, got {args!r}")
        return fact["relation"], list(args)
    if isinstance(fact, (str, bytes)) or not isinstance(fact, Sequence):
        raise TypeError(
            f"fact {index} is {fact!r}: give (relation, arg_1, ..., arg_n), "
            '{"relation": ..., "args": [...]} or a Fact'
        )
    if len(fact) < 2:
        raise ValueError(f"fact {index} is {tuple(fact)!r}: a relation and at least one argument")
    return fact[0], list(fact[1:])


def fact_json(fact: Any, index: int) -> str:
    """One fact as the service's JSON ``{"relation", "args"}`` (ASCII); TypeError or ValueError,
    naming the fact's position, for a fact that is not one."""
    relation, args = _parts(fact, index)
    if not args:
        raise ValueError(f"fact {index}: no arguments")
    for value in (relation, *args):
        if not isinstance(value, str):
            raise TypeError(f"fact {index}: names are text, got {value!r}")
    return json.dumps({"relation": relation, "args": args}, separators=(",", ":"))


def fact_items(facts: FactLike | Iterable[FactLike]) -> list[str]:
    """Every fact as JSON, all checked before anything is sent. One ``Fact`` or mapping may
    be given alone; a tuple of names alone is refused (is it one fact, or several?)."""
    if isinstance(facts, (Fact, Mapping)):
        facts = [facts]
    if isinstance(facts, (str, bytes)):
        raise TypeError("facts must be a list of facts, not text")
    items = [fact_json(f, i) for i, f in enumerate(facts)]
    if not items:
        raise ValueError("nothing to store: no facts given")
    return items


def _facts_stored(answers: list[dict[str, Any]]) -> FactsStored:
    return FactsStored(
        ids=[i for a in answers for i in a["ids"]],
        new=sum(a["new"] for a in answers),
        count=answers[-1]["count"],
    )


class FactOperations(Uploads):
    """The operations on facts (``Operations`` has them all)."""

    @operation(f"POST {FACTS}", "GET /v1/info")
    def store_facts(
        self, name: str, facts: FactLike | Iterable[FactLike], *, progress: bool | None = None
    ) -> Op[FactsStored]:
        """Store facts in a relational memory, in as many requests as the service's limits need.

        Args:
            facts: each ``(relation, arg_1, ..., arg_n)``, ``{"relation", "args"}`` or a
                ``Fact`` (``facts()`` of another memory, say); one mapping or Fact may stand
                alone. Entities and relations are created on first use.
            progress: a tqdm bar; None = on a terminal, once the upload takes a second request.
        Returns:
            Each fact's id in input order (a fact stored before keeps its id and is not
            stored twice), how many were new, and the memory's count of facts after. Each
            request is stored whole or not at all, durably before it is answered. Storing
            does not train: ``train`` once the facts are in.
        Raises:
            TypeError or ValueError, before anything is sent, for a fact that is not one;
            ValidationError ``arity_mismatch`` (another number of arguments than the
            relation's first fact had), ``wrong_kind`` (not a relational memory), ...;
            an ApiError of a later request carries what the earlier ones stored in
            ``exc.stored`` (a FactsStored).
        """
        items = fact_items(facts)
        return (
            yield from self._upload(
                path(FACTS, name=name),
                "facts",
                iter(items),
                _facts_stored,
                total=len(items),
                unit="fact",
                desc=f"store {name}",
                progress=progress,
            )
        )

    @operation(f"GET {FACT}")
    def get_fact(self, name: str, fact_id: int) -> Op[Fact]:
        """One stored fact by id; NotFound (``fact_not_found``) if none."""
        return Fact.from_json((yield from self._json("GET", path(FACT, name=name, fact_id=fact_id))))

    @operation(f"DELETE {FACT}")
    def delete_fact(self, name: str, fact_id: int) -> Op[None]:
        """Delete one fact (durable on return; NotFound ``fact_not_found`` if none). Its
        entities and relation stay known; the model unlearns it at the next ``train``
        (the memory is ``stale`` until then)."""
        yield from self._call("DELETE", path(FACT, name=name, fact_id=fact_id))

    @operation(f"POST {QUERY}")
    def query(
        self,
        name: str,
        relation: str,
        args: Sequence[str | None],
        k: int = 10,
        filter_known: bool = False,
    ) -> Op[QueryResult]:
        """Complete a fact with one missing argument: ``query("kb", "capital_of", [None, "italy"])``.

        Args:
            relation: a relation the memory knows.
            args: the relation's arguments, exactly one of them None (the one asked for).
            k: how many candidates, best first (more than there are entities gives all).
            filter_known: leave out the entities that complete a stored fact (find new ones).
        Returns:
            ``candidates`` (``Candidate(entity, score, known)``: higher scores are truer, 0
            best; ``known``: the completed fact is stored), ``entities`` (their names), the
            memory's ``state`` and ``trained_count``.
        Raises:
            ValidationError ``unknown_relation`` / ``unknown_entity`` (naming it),
            ``arity_mismatch``, ``invalid_query`` (no or several None), ``wrong_kind``;
            Conflict ``not_trained`` before the first training finished.
        """
        if isinstance(args, str):
            raise TypeError("args is a list of entity names, with None for the one asked for")
        body = {"relation": relation, "args": list(args), "k": k, "filter_known": filter_known}
        data = yield from self._json("POST", path(QUERY, name=name), body, idempotent=True)
        return QueryResult.from_json(data)

    @operation(f"GET {VOCABULARY}")
    def vocabulary(self, name: str, *, page_size: int | None = None) -> Op[Vocabulary]:
        """The relations a relational memory knows (with their arities, the rules' included)
        and all its entities in the order they were first used (fetched ``page_size``
        entities, default the service's 100, a request). Names stay known when their facts
        are deleted."""
        entities: list[str] = []
        cursor = None
        while True:
            data = yield from self._json(
                "GET", path(VOCABULARY, name=name), params=page_params(cursor, page_size)
            )
            entities += data["entities"]
            cursor = data["next_cursor"]
            if cursor is None:
                return Vocabulary(
                    relations=[Relation.from_json(r) for r in data["relations"]],
                    entities=entities,
                    entity_count=data["entity_count"],
                )
