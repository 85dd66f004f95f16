"""Training as background jobs: start one, follow its progress, energy and ETA, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from ..exceptions import JobNotFound
from ..gate import body_limit
from ..schemas import NAME_PATTERN, Job, JobList, TrainRequest
from .deps import READ, READ_ERRORS, SMALL_BODY, WRITE, WRITE_ERRORS, RegistryDep, errors, run_sync
from .params import JobIdParam, NameParam

router = APIRouter(tags=["jobs"])

TrainBody = Annotated[
    TrainRequest | None,
    Body(description="optional; {} trains with the model's defaults", examples=[{"epochs": 300}, {}]),
]


@router.post(
    "/v1/memories/{name}/train",
    status_code=202,
    response_model=Job,
    dependencies=WRITE,
    responses=errors(400, 404, 409, 422, *WRITE_ERRORS),
)
@body_limit(SMALL_BODY)
async def train(registry: RegistryDep, body: TrainBody = None, name: str = NameParam) -> Job:
    """Train a memory's model (kinds pc, pcgraph, relational) on every pattern (fact) stored now,
    as a background job (202). One job at a time per memory (409 while one is unfinished);
    follow it at `/v1/jobs/{id}`. Recalls and queries keep using the last trained model until
    the job succeeds."""
    live = registry.get(name)
    epochs = body.epochs if body is not None else None
    return Job(**await run_sync(registry.train, live, epochs))


@router.get("/v1/jobs", response_model=JobList, dependencies=READ, responses=errors(422, *READ_ERRORS))
async def list_jobs(
    registry: RegistryDep,
    memory: str | None = Query(None, pattern=NAME_PATTERN, description="only this memory's jobs"),
) -> JobList:
    """Jobs still remembered (unfinished ones, and the last AMS_JOBS_KEPT finished ones)."""
    return JobList(jobs=[Job(**j) for j in registry.jobs.list(memory)])


@router.get(
    "/v1/jobs/{job_id}", response_model=Job, dependencies=READ, responses=errors(404, 422, *READ_ERRORS)
)
async def get_job(registry: RegistryDep, job_id: str = JobIdParam) -> Job:
    """A job's status, progress (0..1), epoch, last energy and ETA in seconds."""
    job = registry.jobs.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return Job(**job)


@router.delete(
    "/v1/jobs/{job_id}", response_model=Job, dependencies=WRITE, responses=errors(404, 422, *WRITE_ERRORS)
)
async def cancel_job(registry: RegistryDep, job_id: str = JobIdParam) -> Job:
    """Cancel a job: it stops within one step of its work and the memory keeps its previous model."""
    job = registry.jobs.cancel(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return Job(**job)
