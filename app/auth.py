"""API keys: which key a request carries, and whether it may do what it asks.

With ``AMS_API_KEY`` set, /v1 needs ``Authorization: Bearer <key>`` (or ``X-API-Key``);
``AMS_READ_API_KEY`` may only read and recall. Keys are compared in constant time, both
always. ``check_key`` works on the raw headers, so the ASGI gate (gate.py) can answer 401
or 403 before any body is read, and the routes' dependencies (api/deps.py) answer the same.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from .exceptions import ApiError
from .settings import Settings

__all__ = ["authorization_problem", "check_key", "presented_key"]


def _equal(a: str, b: str | None) -> bool:
    """Constant-time comparison (False when b is not set)."""
    return b is not None and hmac.compare_digest(a.encode(), b.encode())


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries: a Bearer token, else the X-API-Key header (as FastAPI's
    HTTPBearer and APIKeyHeader read them), or None."""
    bearer = header = None
    for name, value in headers:
        if name == b"authorization" and bearer is None:
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials:
                bearer = credentials
        elif name == b"x-api-key" and header is None:
            header = value.decode("latin-1")
    return bearer or header or None


def authorization_problem(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """What is wrong with an ``Authorization`` header that carries no Bearer token (e.g. the
    bare key, or ``Basic ...``), or None: a 401 names it instead of asking for a key."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return None
            if scheme.lower() == "bearer":
                return "the Authorization header has no key after 'Bearer'"
            return "the Authorization header must read 'Bearer <key>' (its scheme is not Bearer)"
    return None


def check_key(settings: Settings, key: str | None, write: bool, problem: str | None = None) -> str:
    """Who the request is, for rate limits ("full", "read", or "open" without keys set);
    ``ApiError`` 401 for a missing or wrong key (``problem``: why the headers carry none, from
    ``authorization_problem``), 403 for the read key on a write."""
    if not settings.api_key:
        return "open"
    if not key:
        raise ApiError(
            401,
            "unauthorized",
            f"{problem or 'an API key is needed'}: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    full, read = _equal(key, settings.api_key), _equal(key, settings.read_api_key)  # both, always
    if full:
        return "full"
    if read:
        if write:
            raise ApiError(403, "forbidden", "this API key may only read and recall")
        return "read"
    raise ApiError(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
