"""Typed dependencies shared by the routers: the service, readiness, API keys, helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..auth import check_key
from ..exceptions import NotReady
from ..registry import Registry
from ..schemas import ErrorResponse
from ..service import Service

T = TypeVar("T")

# The body limit of routes whose JSON bodies FastAPI parses itself, on the event loop
# (create, train, demo): their bodies are small, and a large one would hold the loop.
SMALL_BODY = 64 * 1024

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <AMS_API_KEY or AMS_READ_API_KEY>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the key, as a header")


# The dependencies below do no I/O, so they are coroutines: FastAPI calls a plain ``def``
# dependency on a worker thread, one thread hop per dependency per request, and under
# load those hops cost the event loop more than the work (measured: scripts/bench_service.py).
async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_registry(service: ServiceDep) -> Registry:
    """The registry, once recovery has finished; 503 not_ready before."""
    if not service.is_ready or service.registry is None:
        raise NotReady(service.error or "the service is still loading its memories")
    return service.registry


RegistryDep = Annotated[Registry, Depends(get_registry)]


def _check_key(
    service: Service, bearer: HTTPAuthorizationCredentials | None, header: str | None, write: bool
) -> None:
    check_key(service.settings, bearer.credentials if bearer is not None else header, write)


async def require_read(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> None:
    """Reads and recalls: AMS_API_KEY or AMS_READ_API_KEY (when keys are set)."""
    _check_key(service, bearer, header, write=False)


async def require_write(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> None:
    """Writes: AMS_API_KEY only (when keys are set); 403 for the read key."""
    _check_key(service, bearer, header, write=True)


async def read_access(request: Request, service: Service) -> Registry:
    """What ``dependencies=READ`` and a ``RegistryDep`` parameter do for a route, in the same
    order (API key: 401/403, then readiness: 503), for code outside FastAPI's routing."""
    await require_read(service, await _bearer(request), await _header(request))
    return await get_registry(service)


READ = [Depends(require_read)]
WRITE = [Depends(require_write)]


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking work (tensors, storage, image decoding) on a worker thread."""
    return await anyio.to_thread.run_sync(fn, *args)


def json_bytes_response(body: bytes) -> Response:
    """A 200 answer of JSON serialised already (a response model's ``model_dump_json``, done
    on a worker thread: FastAPI would validate and serialise it again on the event loop)."""
    return Response(body, media_type="application/json")


def wants_png(request: Request) -> bool:
    """True when the Accept header prefers image/png over JSON (q-values honoured)."""
    best, best_q = None, -1.0
    for part in request.headers.get("accept", "").split(","):
        fields = [f.strip() for f in part.split(";")]
        media, q = fields[0].lower(), 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if media in ("image/png", "image/*", "application/json") and q > best_q:
            best, best_q = media, q
    return best in ("image/png", "image/*")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses entries for error statuses, all with the error shape."""
    text = {
        400: "malformed request (e.g. invalid JSON)",
        401: "API key missing or invalid",
        403: "the read-only key may not write",
        404: "unknown memory, pattern or job",
        406: "the asked-for representation is not available",
        408: "the request body did not arrive in time (AMS_BODY_TIMEOUT)",
        409: "conflict (exists already, busy, empty, or the memory failed recovery: memory_failed)",
        413: "request body or image too large",
        415: "unsupported content type",
        422: "invalid input (shape, dimension, NaN, base64, image, batch size, config, memory budget)",
        429: "too many requests for this API key (AMS_RATE_LIMIT); see Retry-After",
        503: "not ready (memories still loading), busy (see Retry-After), or storage failing",
        507: "the disk is full: nothing was written",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "error")} for s in statuses}


READ_ERRORS = (401, 408, 429, 503)  # what any /v1 read may answer besides its own errors
WRITE_ERRORS = (401, 403, 408, 429, 503, 507)  # and any write
