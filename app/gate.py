"""The first check of every request, on its headers alone: the API key, before any body is read.

``AccessGate`` is pure ASGI middleware, outside everything that reads a body. For a /v1
path it finds the route the request is for (by the routes' own matching, as FastAPI's
router decides), and asks of its key what that route asks (``auth.check_key``): a route
with the ``WRITE`` dependency needs the full key, any other the read key or the full one;
a /v1 path no route serves needs a key too. A request without the right key gets its 401
or 403 at once, never having had a byte of its body read (and with ``Connection: close``
when it announced one, so that the client stops sending it). Health, metrics, the demo
page and the API documentation (/docs, /redoc, /openapi.json) are open.

It also hands the layers inside it what they need, in the ASGI scope:
``ams.identity`` (who to count rate limits against: the key's name, or the client's
address without keys), ``ams.max_body`` / ``ams.max_body_why`` (the route's body limit
and what sets it: ``body_limit``, which may depend on the memory the path names, or
AMS_MAX_REQUEST_BYTES) and, for a JSON body of a route marked with ``value_limit``,
``ams.max_values`` (the most values it may hold, and what it is for: limits.py counts its
commas as it arrives and refuses it as soon as they pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import authorization_problem, check_key, presented_key
from .errors import service_error_response
from .exceptions import ApiError
from .settings import Settings

__all__ = ["AccessGate", "RoutePolicy", "body_limit", "value_limit"]

F = TypeVar("F", bound=Callable[..., Any])
# A route's body limit: bytes, or a function of the request's scope and path parameters that
# gives (bytes, what sets them), or None for the default.
Limit = int | Callable[[Scope, dict[str, Any]], tuple[int, str] | None]
# A route's value limit: a function of the scope and path parameters giving (values, what
# takes them), or None for no limit.
ValueLimit = Callable[[Scope, dict[str, Any]], tuple[int, str] | None]


def body_limit(max_bytes: Limit) -> Callable[[F], F]:
    """Mark a route's endpoint as taking bodies of at most ``max_bytes`` (under the
    ``@router.<method>`` line): routes whose small JSON bodies FastAPI parses itself, or
    whose bodies are bounded by the memory they name (a recall of a vector memory)."""

    def mark(endpoint: F) -> F:
        endpoint.max_body_bytes = max_bytes  # type: ignore[attr-defined]
        return endpoint

    return mark


def value_limit(max_values: ValueLimit) -> Callable[[F], F]:
    """Mark a route's endpoint as taking JSON bodies of at most ``max_values(scope, params)``
    values (under the ``@router.<method>`` line): a recall's cue, bounded by its memory's D
    even where the body's size is not (an image memory's cue may be a large picture)."""

    def mark(endpoint: F) -> F:
        endpoint.max_values = max_values  # type: ignore[attr-defined]
        return endpoint

    return mark


@dataclass(frozen=True)
class RoutePolicy:
    """What a route asks of a request: the full key (``write``), its body limit in bytes, and
    the most values its JSON body may hold (None: no limit)."""

    write: bool
    max_body: Limit
    max_values: ValueLimit | None = None


def _policy(route: APIRoute, default_body: int) -> RoutePolicy:
    # The routes' key checks are dependencies (api/deps.py READ / WRITE): read them off.
    names = {getattr(dep.dependency, "__name__", "") for dep in route.dependencies}
    return RoutePolicy(
        write="require_write" in names,
        max_body=getattr(route.endpoint, "max_body_bytes", default_body),
        max_values=getattr(route.endpoint, "max_values", None),
    )


class AccessGate:
    """Pure ASGI middleware: API keys checked on headers alone (see the module docstring).

    Arguments:
        app: the rest of the application.
        routes: the API's routes (``api.ROUTERS``' routes).
        settings: the keys and the default body limit.
    """

    def __init__(self, app: ASGIApp, routes: list, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self._default = RoutePolicy(write=False, max_body=settings.max_request_bytes)
        self._routes = [
            (route, _policy(route, settings.max_request_bytes))
            for route in routes
            if isinstance(route, APIRoute)
        ]

    def policy(self, scope: Scope) -> tuple[RoutePolicy, dict[str, Any]]:
        """The policy of the route that would serve this request (HEAD as GET), or the default,
        and the request's path parameters."""
        probe = scope if scope["method"] != "HEAD" else {**scope, "method": "GET"}
        for route, policy in self._routes:
            match, child = route.matches(probe)
            if match is Match.FULL:
                return policy, child.get("path_params", {})
        return self._default, {}

    def _max_body(self, scope: Scope, policy: RoutePolicy, params: dict[str, Any]) -> tuple[int, str]:
        default = (self.settings.max_request_bytes, "AMS_MAX_REQUEST_BYTES")
        limit = policy.max_body
        found = limit(scope, params) if callable(limit) else (limit, "this endpoint's limit")
        return min(found, default) if found is not None else default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = path == "/v1" or path.startswith("/v1/")
        policy, params = self.policy(scope) if api else (self._default, {})
        scope["ams.max_body"], scope["ams.max_body_why"] = self._max_body(scope, policy, params)
        if policy.max_values is not None and _is_json(scope):
            scope["ams.max_values"] = policy.max_values(scope, params)
        try:
            headers = scope["headers"]
            problem = authorization_problem(headers) if api else None
            identity = (
                check_key(self.settings, presented_key(headers), policy.write, problem) if api else "open"
            )
        except ApiError as exc:
            response = service_error_response(exc)
            if _announces_body(scope):
                response.headers["Connection"] = "close"  # do not make the client send it all
            await response(scope, receive, send)
            return
        if identity == "open":  # no keys: count each client address on its own
            client = scope.get("client")
            identity = f"client {client[0] if client else '?'}"
        else:
            identity = {"full": "the API key", "read": "the read API key"}[identity]
        scope["ams.identity"] = identity
        await self.app(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    """The body is JSON (or says nothing of its type): a picture upload's bytes hold commas."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value.split(b";")[0].strip().lower()
            return ctype in (b"", b"application/json") or ctype.endswith(b"+json")
    return True


def _announces_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
