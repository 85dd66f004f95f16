"""The recall endpoints without FastAPI's routing, dependency solving and response validation.

Under load the service's per-request CPU, not the memory, bounded recalls per second: a
profile of POST /v1/memories/{name}/retrieve at 32 concurrent callers (scripts/bench_service.py)
spent more time in FastAPI's middleware, routing and dependency solving than in building the
answer. ``RecallFastPath`` is pure ASGI middleware that answers ``POST
/v1/memories/{name}/{retrieve,complete,lookup}`` itself, with the very functions the FastAPI
routes call (``retrieve_response`` etc.) after the same checks in the same order
(``read_access``: API key, then readiness). Everything else, including a name that does not
match the route's pattern (422 from FastAPI), goes on to FastAPI unchanged.

It sits inside the metrics and body-limit middleware, so request metrics (labelled with the
FastAPI route it stands in for) and the body limit apply as before; an unexpected exception
propagates to Starlette's ServerErrorMiddleware, whose handler answers the 500 as for any route.
``AMS_FAST_RECALL=false`` turns it off (every request then goes through FastAPI).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
from starlette._utils import get_route_path  # the path Starlette's router matches (root_path removed)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .api import lookup, recall
from .api.deps import read_access
from .errors import ApiError, error_response
from .registry import Registry
from .schemas import NAME_PATTERN
from .service import Service

__all__ = ["RecallFastPath"]

Handler = Callable[[Request, Service, Registry, str], Awaitable[Response]]

# The endpoint's last path segment -> (the FastAPI route function, the shared handler).
_HANDLERS: dict[str, tuple[Callable, Handler]] = {
    "retrieve": (recall.retrieve, recall.retrieve_response),
    "complete": (recall.complete, recall.complete_response),
    "lookup": (lookup.lookup, lookup.lookup_response),
}
_PATH = re.compile(r"/v1/memories/(?P<name>[^/]+)/(?P<endpoint>retrieve|complete|lookup)")
_NAME = re.compile(NAME_PATTERN)


class RecallFastPath:
    """Pure ASGI middleware serving the recall endpoints (see the module docstring).

    Arguments:
        app: the rest of the application (FastAPI's own stack).
        routes: the recall routers' routes, to find the APIRoute each endpoint stands in for
            (the metrics middleware labels requests with ``scope["route"]``'s path template).
    """

    def __init__(self, app: ASGIApp, routes: list) -> None:
        self.app = app
        by_endpoint = {route.endpoint: route for route in routes if isinstance(route, APIRoute)}
        self._routes = {
            endpoint: (by_endpoint[route_fn], handler) for endpoint, (route_fn, handler) in _HANDLERS.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PATH.fullmatch(get_route_path(scope))
        if match is None or not _NAME.fullmatch(match["name"]):
            await self.app(scope, receive, send)
            return
        route, handler = self._routes[match["endpoint"]]
        scope["route"] = route
        scope["path_params"] = {"name": match["name"]}
        request = Request(scope, receive)
        service: Service = scope["app"].state.service
        try:
            registry = await read_access(request, service)
            response = await handler(request, service, registry, match["name"])
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
        await response(scope, receive, send)
