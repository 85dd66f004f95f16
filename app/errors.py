"""The service's error shape, and the one place where errors become responses.

Every error response is ``{"error": {"code": str, "message": str, "details": any}}``.
The service's own errors (``exceptions.ServiceError``: each carries its status and
code) and memory_core's (``LIBRARY_ERRORS``) are answered by ``service_error_response``,
which the app's handlers and the recall fast path share; the handlers also translate
FastAPI's validation errors and Starlette's HTTP errors (404 route, 405 method) to the
same shape. Anything else is a bug: it is logged and answered with a 500 of the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from memory_core import EmptyMemoryError
from memory_core.data import DatasetUnavailable
from memory_core.text import TextEncoderUnavailable

from .exceptions import ServiceError

__all__ = [
    "HANDLED_ERRORS",
    "LIBRARY_ERRORS",
    "clean_validation_errors",
    "error_response",
    "install_error_handlers",
    "invalid_request",
    "out_of_memory",
    "service_error_response",
]

log = logging.getLogger("app")


# memory_core's errors that say something about the memory or the deployment, not a bug.
LIBRARY_ERRORS: dict[type[Exception], tuple[int, str]] = {
    EmptyMemoryError: (409, "memory_empty"),
    TextEncoderUnavailable: (501, "text_model_unavailable"),
    DatasetUnavailable: (501, "dataset_unavailable"),
}
HANDLED_ERRORS = (ServiceError, *LIBRARY_ERRORS)


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSONResponse with the error shape."""
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}}, status_code=status, headers=headers
    )


def service_error_response(exc: Exception) -> JSONResponse:
    """The response for one of ``HANDLED_ERRORS``."""
    if isinstance(exc, ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    status, code = next(v for cls, v in LIBRARY_ERRORS.items() if isinstance(exc, cls))
    return error_response(status, code, str(exc))


def clean_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors without the (possibly huge) input and non-JSON context."""
    cleaned = []
    for err in errors:
        item = {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type", "")}
        ctx = err.get("ctx")
        if isinstance(ctx, dict):
            item["ctx"] = {
                k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
                for k, v in ctx.items()
            }
        cleaned.append(item)
    return cleaned


def _where(loc: list[Any]) -> str:
    """A pydantic error's location as the API's messages write it: ``patterns[0].vector``
    for the body, ``query parameter limit`` for the rest, ``the body`` for the body whole."""
    if loc and loc[0] == "body":
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
        return field.lstrip(".") or "the body"
    if len(loc) >= 2:
        return f"{loc[0]} parameter {'.'.join(str(part) for part in loc[1:])}"
    return ".".join(str(part) for part in loc) or "the request"


def invalid_request(errors: list[dict[str, Any]]) -> tuple[int, str, str]:
    """Status, code and message for cleaned pydantic errors: 400 ``invalid_json`` with the
    parser's complaint, else 422 ``validation_error`` naming the first three problems, e.g.
    ``the request does not match the API's schema: vector: Input should be a valid array``."""
    for err in errors:
        if err["type"] == "json_invalid":
            why = (err.get("ctx") or {}).get("error")
            at = err["loc"][-1] if err["loc"] and isinstance(err["loc"][-1], int) else None
            where = f" at character {at}" if at is not None else ""  # FastAPI's parser gives the offset
            return (
                400,
                "invalid_json",
                "the request body is not valid JSON" + (f": {why}{where}" if why else ""),
            )
    problems = [f"{_where(err['loc'])}: {err['msg']}" for err in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return (
        422,
        "validation_error",
        "the request does not match the API's schema: " + "; ".join(problems) + more,
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "not_ready",
}


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path, by the routes' own matching (a
    route whose path matches but whose method does not matches partly): the app's own routes
    (page, docs) and the API's (``app.state.api_routes``: FastAPI keeps included routers as
    opaque entries of ``app.routes``)."""
    methods: set[str] = set()
    for route in [*request.app.routes, *getattr(request.app.state, "api_routes", ())]:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")  # head.py answers HEAD wherever GET is served
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Give the service's errors, validation errors, HTTP errors and unexpected ones the error shape."""

    async def _service_error(request: Request, exc: Exception) -> JSONResponse:
        return service_error_response(exc)

    for cls in HANDLED_ERRORS:
        app.add_exception_handler(cls, _service_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = clean_validation_errors(list(exc.errors()))
        return error_response(*invalid_request(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            # One route per method: Starlette names only the first route's methods; name all.
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return error_response(exc.status_code, code, message, None, headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if out_of_memory(exc):  # the budget (budget.py) should have refused it first: logged as a bug
            log.error("out of memory on %s %s: %s", request.method, request.url.path, exc)
            return error_response(
                503,
                "out_of_memory",
                "the service ran out of memory for this request: retry later, or with less",
                headers={"Retry-After": "5"},
            )
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error (a bug: please report it)")


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, or torch's allocator giving up."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower()
    )
