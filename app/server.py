"""Serving with uvicorn (``python -m app``), with a timeout on request headers.

uvicorn times out idle keep-alive connections, but not a client that connects and sends
nothing, or sends its headers a byte at a time: each such connection would be held for
ever. ``HeaderTimeoutProtocol`` (uvicorn's httptools protocol) gives every request
AMS_HEADER_TIMEOUT seconds, from the connection's start or the previous response's end,
to deliver its headers whole; past that it answers 408 and closes the connection.
Bodies have their own deadline (limits.py). ``run`` also caps open connections and
requests at AMS_MAX_CONNECTIONS (uvicorn's ``limit_concurrency``: 503 past it).
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import Settings

__all__ = ["HeaderTimeoutProtocol", "run"]

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    header_timeout = 10.0  # seconds; set by ``run`` from the settings

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # closed already, or a request (a pipelined one) is being served: its headers came
        body = (
            b'{"error": {"code": "request_timeout", "message": "the request headers did not arrive '
            b'within the header timeout (AMS_HEADER_TIMEOUT)", "details": null}}'
        )
        self.transport.write(_REQUEST_TIMEOUT % (len(body), body))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers (keep-alive idles out earlier)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def run(settings: Settings) -> None:
    """Serve ``app.main:app`` on AMS_HOST:AMS_PORT with the protections above."""
    HeaderTimeoutProtocol.header_timeout = settings.header_timeout
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=HeaderTimeoutProtocol,
        limit_concurrency=settings.max_connections,
    )
