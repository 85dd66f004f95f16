"""Health, readiness, metrics and service info."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import memory_core
from memory_core import SEPARATIONS, SIMILARITIES

from ..errors import error_response
from ..kinds import KINDS
from ..schemas import Health, Info, Limits
from .deps import READ, ServiceDep, errors

router = APIRouter()


@router.get("/livez", tags=["health"], response_model=Health)
async def livez() -> Health:
    """The process is up (even while memories are still loading). Answered on the event loop,
    so it stays quick when every worker thread is busy recalling."""
    return Health(status="ok")


@router.get("/readyz", tags=["health"], response_model=Health, responses=errors(503))
async def readyz(service: ServiceDep) -> Health | JSONResponse:
    """Ready to serve: storage is recovered and every memory is loaded (in the Ray mode: every
    shard and replica of every memory is up); 503 until then."""
    if not service.is_ready:
        return error_response(503, "not_ready", service.error or "the service is still loading its memories")
    # (Ray mode: asks the cluster's control store, so off the event loop)
    down = await run_in_threadpool(service.registry.unavailable) if service.registry is not None else None
    if down:  # Ray mode: a shard or replica is not up
        return error_response(503, "not_ready", down)
    return Health(status="ready")


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format; names prefixed ams_",
        }
    },
)
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: requests and latencies per endpoint, memory sizes, job progress."""
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/info", tags=["info"], response_model=Info, dependencies=READ, responses=errors(401))
def info(service: ServiceDep) -> Info:
    """Version, device, limits, and what memories can be made of (kinds, similarities, separations)."""
    s = service.settings
    budget = service.budget.usage()
    return Info(
        version=memory_core.__version__,
        device=str(service.device),
        cuda=torch.cuda.is_available(),
        kinds=list(KINDS),
        similarities=list(SIMILARITIES),
        separations=list(SEPARATIONS),
        default_configs={name: cls.default_config() for name, cls in KINDS.items()},
        limits=Limits(
            max_request_bytes=s.max_request_bytes,
            max_image_pixels=s.max_image_pixels,
            max_batch=s.max_batch,
            max_dim=s.max_dim,
            max_page=s.max_page,
            max_k=s.max_k,
            max_steps=s.max_steps,
            max_epochs=s.max_epochs,
            max_solver_steps=s.max_solver_steps,
            max_text_chars=s.max_text_chars,
            memory_budget_bytes=budget["limit"],
            memory_free_bytes=budget["free"],
            rate_limit=s.rate_limit,
        ),
        auth=bool(s.api_key),
    )
