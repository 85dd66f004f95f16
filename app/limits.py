"""Request bodies, bounded in size, in time and in the bytes all of them hold at once.

``BodyLimitMiddleware`` reads each request's body before the app sees it, and:

- size: a body over the route's limit (``ams.max_body`` from the gate: AMS_MAX_REQUEST_BYTES,
  or less for routes whose small JSON bodies FastAPI parses itself) gets 413
  ``request_too_large``; a declared Content-Length over it is refused before reading
  anything, any other body (chunked, or a lying Content-Length) as soon as the count
  passes it;
- time: a body not received whole within AMS_BODY_TIMEOUT seconds of the request's
  start gets 408 ``request_timeout`` (a client trickling bytes holds nothing for long);
- values: a JSON body whose route says how many values it may hold (``ams.max_values``
  from the gate: a recall's cue, bounded by its memory's D) gets 422 ``too_many_values``
  as soon as its commas, counted per chunk as it arrives (one C call each), pass that
  count (a 30 MB vector sent to a 28 x 28 image memory is refused at its first chunk,
  not read whole and then counted);
- memory: the bytes held by all bodies being read or waiting for their request to end
  are capped at AMS_MAX_INFLIGHT_BYTES; a request that would pass it gets 503
  ``server_busy`` with Retry-After (a declared Content-Length is counted whole at once).

Every refusal has the service's error shape and ``Connection: close``. A body within the
limits is handed to the app unchanged, in one piece.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .exceptions import ServerBusy

__all__ = ["BodyLimitMiddleware", "InFlight"]


class InFlight:
    """Bytes held by request bodies now, against a cap (event loop only: no lock needed)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.held = cap, 0

    def take(self, nbytes: int) -> bool:
        if self.held + nbytes > self.cap:
            return False
        self.held += nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.held -= nbytes


class _Refused(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.details = details


class BodyLimitMiddleware:
    """Pure ASGI middleware: bodies within size, time and in-flight limits (module docstring).

    Arguments:
        app: the rest of the application.
        max_bytes: the default body limit (a route's ``ams.max_body`` overrides it).
        max_inflight: bytes all bodies may hold at once.
        timeout: seconds a body may take to arrive whole.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, max_inflight: int = 1 << 62, timeout: float = 3600.0
    ) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout
        self.inflight = InFlight(max_inflight)

    async def _drain(self, receive: Receive, more: bool, cap: int, deadline: float) -> None:
        """Read (and drop) what is left of a refused body, up to a bound and until the deadline,
        so that the client, still sending, gets to read the refusal instead of a reset connection."""
        dropped = 0
        while more and dropped <= cap:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return
            if message["type"] == "http.disconnect":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def _read(
        self, receive: Receive, limit: int, held: list[int], values: tuple[int, str] | None = None
    ) -> bytes | None:
        """The whole body (None if the client went away); ``_Refused`` past a limit. ``held[0]``
        counts what was taken from the in-flight cap (for the caller to give back); ``values``
        is the most values the body may hold and what takes them (module docstring)."""
        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        total = 0
        commas = 0
        while True:
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.0))
            except TimeoutError:
                raise _Refused(
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {self.timeout:g} s (AMS_BODY_TIMEOUT)",
                ) from None
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            more = message.get("more_body", False)
            total += len(body)
            if total > limit:
                await self._drain(receive, more, max(limit, 1 << 20), min(deadline, time.monotonic() + 5.0))
                raise _Refused(
                    413, "request_too_large", f"request body of more bytes exceeds the limit of {limit} bytes"
                )
            if values is not None:
                commas += body.count(b",")
                if commas + 1 > values[0]:
                    await self._drain(receive, more, 1 << 20, min(deadline, time.monotonic() + 5.0))
                    raise _Refused(
                        422,
                        "too_many_values",
                        f"the request holds more than {values[0]} values; {values[1]} takes at most {values[0]}",
                        details={"values": commas + 1, "limit": values[0]},
                    )
            if total > held[0]:
                if not self.inflight.take(total - held[0]):
                    raise _busy(self.inflight.cap)
                held[0] = total
            chunks.append(body)
            if not more:
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(scope.get("ams.max_body", self.max_bytes))
        held = [0]  # bytes taken from the in-flight cap
        try:
            declared = _declared_length(scope)
            if declared is not None and declared > limit:
                raise _Refused(
                    413,
                    "request_too_large",
                    f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                )
            if declared:  # counted whole up front: a stalled upload holds its share from the start
                if not self.inflight.take(declared):
                    raise _busy(self.inflight.cap)
                held[0] = declared
            data = await self._read(receive, limit, held, scope.get("ams.max_values"))
            if data is None:
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": data, "more_body": False}
                return await receive()  # after the body: wait for the disconnect, as a server would

            await self.app(scope, replay, send)
        except _Refused as refusal:
            if refusal.status == 413:
                refusal.message += f" ({scope.get('ams.max_body_why', 'AMS_MAX_REQUEST_BYTES')})"
            headers = {"Connection": "close", **refusal.headers}
            await error_response(refusal.status, refusal.code, refusal.message, refusal.details, headers)(
                scope, receive, send
            )
        finally:
            self.inflight.give(held[0])


def _busy(cap: int) -> _Refused:
    error = ServerBusy(
        f"the service is reading {cap >> 20} MiB of request bodies already (AMS_MAX_INFLIGHT_BYTES): retry shortly"
    )
    return _Refused(error.status, error.code, error.message, dict(error.headers or {}))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
