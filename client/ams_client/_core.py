"""The client's one implementation of every call, shared by ``Client`` and ``AsyncClient``.

Each operation is a generator that yields what it needs done (``Send`` a request, ``Sleep``)
and gets the answer back; ``Client`` runs it with blocking I/O, ``AsyncClient`` with
``await``. So retries, upload splitting, paging and job polling are written once and
behave the same in both clients ("sans-I/O").
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from . import __version__
from .errors import ApiError, NetworkError, TooLarge, error_from_response, parse_retry_after
from .models import Limits

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_ALWAYS = frozenset({429, 503})  # the service refused before doing anything
RETRY_IDEMPOTENT = frozenset({502, 504})  # a proxy's fault: safe to repeat a call without side effects


@dataclass(frozen=True)
class Send:
    """Send one request; the driver answers with the ``httpx.Response`` or throws the
    ``httpx.TransportError`` into the operation."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Op = Generator[Step, Any, T]


def operation(*routes: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method with the service's routes it calls ("GET /v1/memories/{name}"); the
    OpenAPI coverage test checks that every route of the service has a method."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__ams_operations__ = tuple(routes)  # type: ignore[attr-defined]
        return fn

    return mark


def path(template: str, **params: str) -> str:
    return template.format(**{k: quote(str(v), safe="") for k, v in params.items()})


def _may_have_stored(response: httpx.Response) -> bool:
    """A 503 that says part of a write may have happened (the Ray mode's
    ``details.stored_unknown``: a store that could not be called off on every shard), so
    that repeating it is not known to be safe."""
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(details, dict) and bool(details.get("stored_unknown"))


def page_params(cursor: str | None, page_size: int | None) -> dict[str, Any]:
    """The query parameters of a page of a listing; ValueError for a ``page_size`` below 1
    (the service's maximum, ``max_page`` of ``info().limits``, it names itself)."""
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise ValueError(f"page_size must be a positive integer or None, got {page_size!r}")
    return {k: v for k, v in (("cursor", cursor), ("limit", page_size)) if v is not None}


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _error_from(response: httpx.Response) -> ApiError:
    return error_from_response(response.status_code, response.headers, response.content)


class Core:
    """Settings shared by both clients, and the request primitive with retries."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_wait: float = 60.0,
        upload_bytes: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """
        Args:
            url: the service, e.g. ``http://127.0.0.1:8000``; default ``$AMS_URL`` or that.
            api_key: sent as ``Authorization: Bearer``; default ``$AMS_API_KEY`` (none if unset).
            timeout: seconds per request (connect, read, write each), or an ``httpx.Timeout``.
            max_retries: retries of a call, with exponential backoff (``backoff`` x 2^n s, full
                jitter, at most ``max_backoff``): any call answered 429 or 503 (honouring
                Retry-After), and calls without side effects (GET, DELETE, recalls) answered
                502/504 or cut off by a network error; a connection that never opened is
                retried for every call. 0 turns retries off.
            max_retry_wait: the longest Retry-After honoured, in seconds; a longer one raises at once.
            upload_bytes: the largest request ``store`` and ``store_facts`` send (default: the
                service's ``max_request_bytes`` from /v1/info); a smaller one suits a proxy's limit.
            headers: extra headers for every request.
        """
        self.url = (url or os.environ.get("AMS_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("AMS_API_KEY")
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.max_retry_wait, self.upload_bytes = max_retry_wait, upload_bytes
        self._headers = {"User-Agent": f"ams-client/{__version__}", "Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._headers.update(headers or {})
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._limits: Limits | None = None
        self._http = self._open()

    def _open(self) -> Any:
        """The HTTP client (httpx.Client or httpx.AsyncClient) of a concrete client."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # --- the request primitive ------------------------------------------------------------
    def _delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def _call(
        self,
        method: str,
        route: str,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        retry: bool = True,
    ) -> Op[httpx.Response]:
        """One call with the retry policy (see ``__init__``); raises the typed error for an
        error answer, ``NetworkError`` when no answer came."""
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        hdrs = {"Content-Type": "application/json"} if content is not None else {}
        hdrs.update(headers or {})
        attempt = 0
        while True:
            can_retry = retry and attempt < self.max_retries
            try:
                response = yield Send(method, route, params, content, hdrs)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if can_retry and (safe or never_sent):
                    yield Sleep(self._delay(attempt))
                    attempt += 1
                    continue
                code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
                raise NetworkError(
                    f"{method} {self.url}{route}: {type(exc).__name__}: {exc or 'no answer'}", code=code
                ) from exc
            status = response.status_code
            if can_retry and status in RETRY_ALWAYS and not safe and _may_have_stored(response):
                can_retry = False
            if can_retry and (status in RETRY_ALWAYS or (safe and status in RETRY_IDEMPOTENT)):
                wait = parse_retry_after(response.headers)
                if wait is None or wait <= self.max_retry_wait:
                    yield Sleep(self._delay(attempt) if wait is None else wait)
                    attempt += 1
                    continue
            if status >= 400:
                raise _error_from(response)
            return response

    def _json(self, method: str, route: str, body: Any = None, **kwargs: Any) -> Op[Any]:
        """A call answered with JSON; ``body`` is sent as JSON (or ``content=`` as given)."""
        if body is not None:
            kwargs["content"] = json_body(body)
        response = yield from self._call(method, route, **kwargs)
        return response.json()

    def _page(
        self, route: str, key: str, parse: Callable[[Any], T], cursor: str | None, page_size: int | None
    ) -> Op[tuple[list[T], str | None]]:
        """One page of a listing (``GET route?cursor=&limit=``): ``parse`` of each of the
        answer's ``key`` items, and the cursor of the next page (None after the last)."""
        data = yield from self._json("GET", route, params=page_params(cursor, page_size))
        return [parse(item) for item in data[key]], data["next_cursor"]

    def _limits_op(self) -> Op[Limits]:
        """The service's limits, asked once per client (``refresh_limits`` forgets them)."""
        if self._limits is None:
            self._limits = Limits.from_json((yield from self._json("GET", "/v1/info"))["limits"])
        return self._limits

    def refresh_limits(self) -> None:
        """Forget the cached limits (the next ``store`` or ``store_facts`` asks /v1/info again)."""
        self._limits = None

    def _http_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.url, "headers": self._headers, "timeout": self._timeout}


def splittable(exc: ApiError) -> bool:
    """A 413 for the body's size (the service's, or a proxy's), not for one picture's pixels."""
    return isinstance(exc, TooLarge) and exc.code != "image_too_large"
