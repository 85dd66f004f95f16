"""The FastAPI application: ``create_app(settings)``, and ``app`` for ``uvicorn app.main:app``.

The lifespan starts recovery (open storage, rebuild every memory) on a worker thread
and yields at once, so /livez answers while memories load and /readyz says 503 until
they are loaded. On shutdown it cancels training jobs and closes storage.

The OpenAPI document (~0.15 s of pydantic schema building) is built and encoded on a
worker thread, never on the event loop: /openapi.json awaits it there, and the served
``app`` builds it at start-up, after recovery, so that no request waits for it (a build on
the loop held /livez for 120 ms, results/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

import memory_core

from . import api
from .errors import install_error_handlers
from .fastpath import RecallFastPath
from .gate import AccessGate
from .head import HeadAsGetMiddleware
from .limits import BodyLimitMiddleware
from .metrics import MetricsMiddleware
from .page import install_page
from .ratelimit import RateLimit
from .schemas import CompleteRequest, LookupRequest, RetrieveRequest, StorePatterns
from .service import Service
from .settings import Settings, get_settings

# Request bodies that routes parse themselves (JSON or multipart on one path): their
# schemas are added to the OpenAPI components so that the requestBody $refs resolve.
_EXTRA_SCHEMAS = (StorePatterns, CompleteRequest, LookupRequest, RetrieveRequest)

DESCRIPTION = """Associative memories over HTTP: store patterns (vectors, images), recall them from
noisy, corrupted or partly masked cues. Errors have the shape
`{"error": {"code", "message", "details"}}`. With `AMS_API_KEY` set, /v1 needs
`Authorization: Bearer <key>` (or `X-API-Key`)."""


def create_app(settings: Settings | None = None, warm_openapi: bool = False) -> FastAPI:
    """Build the service with the given settings (default: from the environment);
    ``warm_openapi``: build the OpenAPI document at start-up, after recovery (module docstring)."""
    settings = settings or get_settings()
    _configure_logging(settings.log_level)
    service = Service(settings)

    def start() -> None:
        service.start()
        if warm_openapi:
            _openapi_bytes(app)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recovery = asyncio.create_task(asyncio.to_thread(start))
        try:
            yield
        finally:
            await recovery  # never close storage under a recovery in progress
            await asyncio.to_thread(service.close)

    # FastAPIOffline: /docs (Swagger UI) and /redoc from assets bundled in the fastapi-offline
    # package, served by the service itself, so that both work without a network.
    app = FastAPIOffline(
        title="Associative memory service",
        version=memory_core.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry, on by default,
        # looks up the global tracer/meter/logger providers on every request (1.6% of the
        # server's CPU under load, scripts/bench_service.py) and has nothing configured here.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    install_error_handlers(app)
    for router in api.ROUTERS:
        app.include_router(router)
    # The API's routes as their routers hold them (paths with the prefixes), for the fast
    # path and the Allow header of a 405 (errors.py), which match requests against them.
    app.state.api_routes = [route for router in api.ROUTERS for route in router.routes]
    # Added innermost first. From the outside in: metrics see every request; the gate checks
    # the API key on the headers alone (gate.py), then the rate limit; only then is a body
    # read, within its size, time and in-flight limits (limits.py); the recall endpoints are
    # answered past FastAPI's routing (fastpath.py); HEAD is routed as GET.
    app.add_middleware(HeadAsGetMiddleware)
    if settings.fast_recall:
        app.add_middleware(RecallFastPath, routes=app.state.api_routes)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        max_inflight=int(
            settings.max_inflight_bytes or max(settings.max_request_bytes, service.budget.limit // 8)
        ),
        timeout=settings.body_timeout,
    )
    if settings.rate_limit > 0:
        app.add_middleware(RateLimit, rate=settings.rate_limit, burst=settings.rate_burst)
    app.add_middleware(AccessGate, routes=app.state.api_routes, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=lambda: service.metrics)
    install_page(app)  # the demo page at /
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    _serve_openapi_off_the_loop(app)
    return app


_OPENAPI_LOCK = threading.Lock()


def _openapi_bytes(app: FastAPI) -> bytes:
    """The OpenAPI document as JSON bytes, built once (on the calling thread, never twice)."""
    with _OPENAPI_LOCK:
        cached = getattr(app.state, "openapi_bytes", None)
        if cached is None:
            cached = app.state.openapi_bytes = json.dumps(app.openapi(), separators=(",", ":")).encode()
        return cached


def _serve_openapi_off_the_loop(app: FastAPI) -> None:
    """Replace FastAPI's /openapi.json route (which builds the document on the event loop)
    with one that awaits ``_openapi_bytes`` on a worker thread."""
    url = app.openapi_url
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != url]

    async def openapi_json(request: Request) -> Response:
        body = getattr(app.state, "openapi_bytes", None) or await asyncio.to_thread(_openapi_bytes, app)
        root = request.scope.get("root_path", "").rstrip("/")
        if root and app.root_path_in_servers:  # behind a proxy's prefix: say so, as FastAPI does
            schema = json.loads(body)
            if root not in {s.get("url") for s in schema.get("servers", [])}:
                schema["servers"] = [{"url": root}, *schema.get("servers", [])]
            body = json.dumps(schema, separators=(",", ":")).encode()
        return Response(body, media_type="application/json")

    app.add_route(url, openapi_json, include_in_schema=False)


def _configure_logging(level: str) -> None:
    """The service's own log lines ("app.*") on stderr, whether or not uvicorn configured logging."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, top = models_json_schema(
            [(m, "validation") for m in _EXTRA_SCHEMAS], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(top.get("$defs", {}))
        if not app.state.service.settings.api_key:
            # No keys configured: the API is open, and the document says so.
            schema["components"].pop("securitySchemes", None)
            for ops in schema["paths"].values():
                for op in ops.values():
                    op.pop("security", None)
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app(warm_openapi=True)
