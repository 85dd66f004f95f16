"""Typed errors. Every error the client raises for a failed call derives from ``ApiError``.

The service answers every error as ``{"error": {"code", "message", "details"}}`` (README,
"Errors"); ``error_from_response`` turns such an answer into the class for its status, so
callers catch what they can handle (``except NotFound``) and read the stable ``code``
(``memory_not_found``, ``shape_mismatch``, ...) for the rest. Errors that never reached
the service (connection refused, timeouts) and jobs that failed carry ``status=None``.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ApiError",
    "AuthError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "JobFailed",
    "NetworkError",
    "NotFound",
    "RateLimited",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]


class ApiError(Exception):
    """A call that failed.

    Attributes:
        status: the HTTP status (None when no answer came: connection errors, jobs).
        code: the service's stable machine-readable code, e.g. ``memory_not_found``.
        message: what was wrong, for people.
        details: structured details (e.g. the validation errors), or None.
        retry_after: seconds the service asked to wait (Retry-After), or None.
        stored: for ``store``, what earlier requests of the same call stored (a StoreResult)
            before this one failed, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.retry_after = details, retry_after
        self.stored: Any = None

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class BadRequest(ApiError):
    """400 (malformed body), 405, 406, 415: the request itself was not one the service takes."""


class ValidationError(BadRequest):
    """422: a value was refused (shape, dimension, NaN, image, config, limit, ...); see ``code``."""


class AuthError(ApiError):
    """401 or 403."""


class Unauthorized(AuthError):
    """401: the API key is missing or not valid."""


class Forbidden(AuthError):
    """403: the (read-only) key may not do this."""


class NotFound(ApiError):
    """404: no such memory, pattern or job (``code`` says which)."""


class Conflict(ApiError):
    """409: exists already, busy (a job running), empty or not trained yet."""


class TooLarge(ApiError):
    """413: the request body or a picture is over the service's limit."""


class RateLimited(ApiError):
    """429: too many requests; ``retry_after`` says how long to wait."""


class Unavailable(ApiError):
    """503: not ready (memories still loading, or recovery failed); ``retry_after`` if given."""


class ServerError(ApiError):
    """Any other 5xx: a fault of the service (or of a proxy in front of it)."""


class NetworkError(ApiError):
    """The service could not be reached, or did not answer in time (``code``: ``connection_error``
    or ``timeout``); ``status`` is None."""


class JobFailed(ApiError):
    """A job that ended ``failed`` or ``cancelled`` while being waited for (``code``: ``job_failed``
    or ``job_cancelled``), or a wait that timed out (``job_timeout``); ``job`` is its last state."""

    def __init__(self, message: str, *, code: str, job: Any) -> None:
        super().__init__(message, code=code)
        self.job = job


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: BadRequest,
    406: BadRequest,
    409: Conflict,
    413: TooLarge,
    415: BadRequest,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
}


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Retry-After as seconds to wait (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> ApiError:
    """The typed error for an error answer; bodies that are not the service's error shape
    (a proxy's HTML page, say) keep their first 200 characters as the message."""
    code, message, details = f"http_{status}", "", None
    try:
        error = json.loads(body)["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(message, status=status, code=code, details=details, retry_after=parse_retry_after(headers))
