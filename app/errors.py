"""The service's error shape and the handlers that give every 4xx that shape.

Every error response is ``{"error": {"code": str, "message": str, "details": any}}``.
``ApiError`` is raised by the service's own code; the handlers below translate
FastAPI's validation errors and Starlette's HTTP errors (404 route, 405 method) to
the same shape. Anything else is a bug: it is logged and answered with a 500 of the
same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "clean_validation_errors", "error_response", "install_error_handlers"]

log = logging.getLogger("app")


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a message for people.

    Arguments:
        status: HTTP status (4xx; 503 only while not ready).
        code: stable snake_case code, e.g. "memory_not_found".
        message: what was wrong, naming the offending input.
        details: optional structured details (e.g. validation errors).
        headers: extra response headers (e.g. WWW-Authenticate).
    """

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSONResponse with the error shape."""
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}}, status_code=status, headers=headers
    )


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
    503: "not_ready",
}


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path (``app.state.route_methods``:
    (path regex, methods) pairs that create_app records from its routers)."""
    path = request.url.path
    methods: set[str] = set()
    for regex, route_methods in getattr(request.app.state, "route_methods", ()):
        if regex.match(path):
            methods |= route_methods
    if "GET" in methods:
        methods.add("HEAD")  # head.py answers HEAD wherever GET is served
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Give ApiError, validation errors, HTTP errors and unexpected ones the error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = clean_validation_errors(list(exc.errors()))
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON", errors)
        return error_response(422, "validation_error", "the request does not match the API's schema", errors)

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
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error (a bug: please report it)")
