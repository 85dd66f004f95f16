"""Memories: create, list, details, delete."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from ..gate import body_limit
from ..kinds import LiveMemory
from ..schemas import MemoryCreate, MemoryDetails, MemoryList
from .deps import READ, READ_ERRORS, SMALL_BODY, WRITE, WRITE_ERRORS, RegistryDep, errors, run_sync
from .params import NameParam

router = APIRouter(prefix="/v1/memories", tags=["memories"])


def memory_details(live: LiveMemory) -> MemoryDetails:
    """A memory's description, with count/state/trained_count read together (takes the
    memory's read lock: call it on a worker thread, not on the event loop)."""
    r = live.record
    return MemoryDetails(
        name=r.name,
        kind=r.kind,
        shape=list(r.shape),
        dim=r.dim,
        text=r.text,
        config=r.config,
        created_at=datetime.fromtimestamp(r.created_at, tz=UTC),
        **live.details(),
    )


@router.post(
    "",
    status_code=201,
    response_model=MemoryDetails,
    dependencies=WRITE,
    responses=errors(400, 409, 413, 422, *WRITE_ERRORS),
)
@body_limit(SMALL_BODY)
async def create_memory(body: MemoryCreate, registry: RegistryDep) -> MemoryDetails:
    """Create a memory. `config` keys are the constructor arguments of its kind; `{}` = good defaults
    (hopfield: euclidean similarity, mask-aware, softmax separation at beta 100; see /v1/info
    `default_configs`)."""

    def work() -> MemoryDetails:
        return memory_details(registry.create(body.name, body.kind, body.shape, body.text, body.config))

    return await run_sync(work)


@router.get("", response_model=MemoryList, dependencies=READ, responses=errors(*READ_ERRORS))
async def list_memories(registry: RegistryDep) -> MemoryList:
    """Every memory, in creation order."""
    return MemoryList(memories=await run_sync(lambda: [memory_details(m) for m in registry.all()]))


@router.get(
    "/{name}", response_model=MemoryDetails, dependencies=READ, responses=errors(404, 422, *READ_ERRORS)
)
async def get_memory(registry: RegistryDep, name: str = NameParam) -> MemoryDetails:
    """A memory's kind, shape, config, count, state and trained_count (and, for a memory that
    failed recovery, state "failed" and why in `error`)."""
    return await run_sync(lambda: memory_details(registry.get(name, allow_failed=True)))


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    dependencies=WRITE,
    responses=errors(404, 422, *WRITE_ERRORS),
)
async def delete_memory(registry: RegistryDep, name: str = NameParam) -> Response:
    """Delete a memory with all its patterns and checkpoints (a running training job is cancelled)."""
    await run_sync(registry.delete, name)
    return Response(status_code=204)
