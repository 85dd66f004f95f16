"""The recall endpoints without FastAPI's routing, dependency solving and response validation.

Under load the service's per-request CPU, not the memory, bounded recalls per second: a
profile of POST /v1/memories/{name}/retrieve at 32 concurrent callers (scripts/bench_service.py)
spent more time in FastAPI's middleware, routing and dependency solving than in building the
answer. ``RecallFastPath`` is pure ASGI middleware that answers ``POST
/v1/memories/{name}/{retrieve,complete,lookup}`` itself, with the very functions the FastAPI
routes call (``retrieve_response`` etc.) after the same checks in the same order
(``read_access``: API key, then readiness). A request is the fast path's when one of those
routes matches it fully by the route's own matching (``APIRoute.matches``: path and method,
as FastAPI's router decides). Everything else, including a name that does not match the
route's pattern (422 from FastAPI), goes on to FastAPI unchanged.

It sits inside the metrics and body-limit middleware, so request metrics (labelled with the
FastAPI route it stands in for) and the body limit apply as before; an unexpected exception
propagates to Starlette's ServerErrorMiddleware, whose handler answers the 500 as for any route.
``AMS_FAST_RECALL=false`` turns it off (every request then goes through FastAPI).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .api import lookup, recall
from .api.deps import read_access
from .errors import HANDLED_ERRORS, service_error_response
from .registry import Registry
from .schemas import NAME_PATTERN
from .service import Service

__all__ = ["RecallFastPath"]

Handler = Callable[[Request, Service, Registry, str], Awaitable[Response]]

# The FastAPI route function -> the handler it and the fast path share.
_HANDLERS: dict[Callable, Handler] = {
    recall.retrieve: recall.retrieve_response,
    recall.complete: recall.complete_response,
    lookup.lookup: lookup.lookup_response,
}
_NAME = re.compile(NAME_PATTERN)


class RecallFastPath:
    """Pure ASGI middleware serving the recall endpoints (see the module docstring).

    Arguments:
        app: the rest of the application (FastAPI's own stack).
        routes: the app's routes; those of the recall endpoints are served here (the
            metrics middleware labels requests with ``scope["route"]``'s path template).
    """

    def __init__(self, app: ASGIApp, routes: list) -> None:
        self.app = app
        self._routes = [
            (route, _HANDLERS[route.endpoint])
            for route in routes
            if isinstance(route, APIRoute) and route.endpoint in _HANDLERS
        ]
        if len(self._routes) != len(_HANDLERS):
            raise ValueError("the recall fast path needs the retrieve, complete and lookup routes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route, handler in self._routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL and _NAME.fullmatch(child_scope["path_params"]["name"]):
                    scope.update(child_scope)  # as FastAPI's router does: route, endpoint, path_params
                    await self._serve(scope, receive, send, handler)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, handler: Handler) -> None:
        request = Request(scope, receive)
        service: Service = scope["app"].state.service
        try:
            registry = await read_access(request, service)
            response = await handler(request, service, registry, scope["path_params"]["name"])
        except HANDLED_ERRORS as exc:
            response = service_error_response(exc)
        await response(scope, receive, send)
