"""Facts of relational memories: store a batch, page through, get or delete one; ask a query;
read the vocabulary. Training is ``POST .../train`` (jobs.py), as for the other trained kinds."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Response

from ..exceptions import ApiError, FactNotFound
from ..fact_schemas import (
    CandidateOut,
    FactOut,
    FactPage,
    FactsStored,
    QueryRequest,
    QueryResult,
    RelationOut,
    StoreFacts,
    Vocabulary,
)
from ..gate import body_limit
from ..kinds import relational_memory
from ..kinds.relational import QueryAnswer
from .deps import (
    READ,
    READ_ERRORS,
    SMALL_BODY,
    WRITE,
    WRITE_ERRORS,
    RegistryDep,
    ServiceDep,
    errors,
    run_sync,
)
from .params import NameParam, decode_cursor, encode_cursor, page_limit

router = APIRouter(prefix="/v1/memories", tags=["facts"])

# A store's body: FastAPI parses it whole, on the event loop, so it is kept small: AMS_MAX_BATCH
# facts of ~4 KiB each (names of up to 200 characters), far above what real facts take.
FACTS_BODY = 4 << 20

FactIdParam = Path(ge=1, le=2**63 - 1, description="the fact's id (from a store or a listing)", examples=[1])


@router.post(
    "/{name}/facts",
    status_code=201,
    response_model=FactsStored,
    dependencies=WRITE,
    responses=errors(400, 404, 413, 422, *WRITE_ERRORS),
)
@body_limit(FACTS_BODY)
async def store_facts(
    body: StoreFacts, registry: RegistryDep, service: ServiceDep, name: str = NameParam
) -> FactsStored:
    """Store facts in a relational memory; answers once they are durable (201). Entities and
    relations are created on first use; a relation's arity is fixed by its first fact (422
    `arity_mismatch` after). The batch is checked whole first: one bad fact stores nothing.
    A fact stored before is not stored twice (it keeps its id). Storing does not train:
    `POST .../train` when the set is complete."""
    live = relational_memory(registry.get(name))
    limit = service.settings.max_batch
    if len(body.facts) > limit:
        raise ApiError(
            422, "batch_too_large", f"{len(body.facts)} facts in one request; the limit is {limit}"
        )
    facts = [(f.relation, tuple(f.args)) for f in body.facts]
    # what the model may grow by: new entities' embeddings, their gradients and Adam's moments
    growth = 4 * 4 * 2 * sum(len(args) for _, args in facts) * int(live.record.config["dim"])

    def store() -> tuple[list[int], int, int]:
        with registry.budget.reserve(growth, f"storing {len(facts)} facts in {name!r}"):
            return live.store_facts(registry.storage, facts)

    ids, new, count = await run_sync(store)
    return FactsStored(ids=ids, new=new, count=count)


@router.get(
    "/{name}/facts", response_model=FactPage, dependencies=READ, responses=errors(404, 422, *READ_ERRORS)
)
async def list_facts(
    registry: RegistryDep,
    service: ServiceDep,
    name: str = NameParam,
    limit: int | None = Query(None, ge=1, description="page size: default 100, at most AMS_MAX_PAGE"),
    cursor: str | None = Query(None, max_length=64, description="next_cursor of the last page"),
) -> FactPage:
    """A page of facts in storage order: `{id, relation, args}` each, and `next_cursor`."""
    limit = page_limit(limit, service.settings)
    live = relational_memory(registry.get(name))
    after = decode_cursor(cursor) if cursor else -1
    rows = await run_sync(registry.storage.page_facts, live.record.id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return FactPage(
        facts=[FactOut(id=r.seq, relation=r.relation, args=list(r.args)) for r in rows],
        next_cursor=encode_cursor(rows[-1].seq) if more else None,
    )


@router.get(
    "/{name}/facts/{fact_id}",
    response_model=FactOut,
    dependencies=READ,
    responses=errors(404, 422, *READ_ERRORS),
)
async def get_fact(registry: RegistryDep, name: str = NameParam, fact_id: int = FactIdParam) -> FactOut:
    """One stored fact."""
    live = relational_memory(registry.get(name))
    row = await run_sync(registry.storage.get_fact, live.record.id, fact_id)
    if row is None:
        raise FactNotFound(name, fact_id)
    return FactOut(id=row.seq, relation=row.relation, args=list(row.args))


@router.delete(
    "/{name}/facts/{fact_id}",
    status_code=204,
    response_class=Response,
    dependencies=WRITE,
    responses=errors(404, 422, *WRITE_ERRORS),
)
async def delete_fact(registry: RegistryDep, name: str = NameParam, fact_id: int = FactIdParam) -> Response:
    """Delete one fact (durable on return). Its entities and relation stay known; the model
    unlearns it at the next training (the memory is `stale` until then)."""
    live = relational_memory(registry.get(name))
    await run_sync(live.delete_fact, registry.storage, fact_id)
    return Response(status_code=204)


@router.post(
    "/{name}/query",
    response_model=QueryResult,
    dependencies=READ,
    responses=errors(400, 404, 409, 413, 422, *READ_ERRORS),
)
@body_limit(SMALL_BODY)
async def query(body: QueryRequest, registry: RegistryDep, name: str = NameParam) -> QueryResult:
    """Complete a fact with one missing argument (`null`): every entity the memory knows ranked
    as that argument, best first, the first `k` returned (`filter_known` leaves out those that
    complete a stored fact). Unknown relation or entity: 422 `unknown_relation` /
    `unknown_entity`; another number of arguments than the relation's: 422 `arity_mismatch`;
    not exactly one null: 422 `invalid_query`; before any training: 409 `not_trained`; a
    query whose working set (every entity scored, `k` answers) could never fit the memory
    budget: 422 `memory_budget_exceeded`."""
    live = relational_memory(registry.get(name))

    def ask() -> QueryAnswer:
        # its working set (RelationalKind.query_bytes: every entity scored, k answers built)
        needed = live.query_bytes(body.k)
        with registry.budget.reserve(needed, f"a query of memory {name!r} for {body.k} candidates"):
            return live.query(body.relation, body.args, body.k, body.filter_known)

    answer = await run_sync(ask)
    return QueryResult(
        candidates=[CandidateOut(entity=c.entity, score=c.score, known=c.known) for c in answer.candidates],
        state=answer.state,
        trained_count=answer.trained_count,
    )


@router.get(
    "/{name}/vocabulary",
    response_model=Vocabulary,
    dependencies=READ,
    responses=errors(404, 422, *READ_ERRORS),
)
async def vocabulary(
    registry: RegistryDep,
    service: ServiceDep,
    name: str = NameParam,
    limit: int | None = Query(None, ge=1, description="entities per page: default 100, at most AMS_MAX_PAGE"),
    cursor: str | None = Query(None, max_length=64, description="next_cursor of the last page"),
) -> Vocabulary:
    """The relations (with their arities) and a page of the entities a relational memory knows.
    Entities and relations stay known when their facts are deleted."""
    limit = page_limit(limit, service.settings)
    live = relational_memory(registry.get(name))
    start = decode_cursor(cursor) if cursor else 0
    relations, entities, total = await run_sync(live.vocabulary, start, limit)
    return Vocabulary(
        relations=[RelationOut(name=r, arity=n) for r, n in relations.items()],
        entities=entities,
        entity_count=total,
        next_cursor=encode_cursor(start + limit) if start + limit < total else None,
    )
