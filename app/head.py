"""HEAD on every GET endpoint: answered as the GET would be, without the body (RFC 9110 9.3.2).

FastAPI's routes serve only the methods they declare, so HEAD was 405. This pure ASGI
middleware routes a HEAD request as a GET and drops the body it produces; the status and
headers (Content-Length and Content-Type included) are the GET's. Uvicorn sends no body for
HEAD either, but the TestClient and other ASGI servers do not need to know that.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGetMiddleware"]


class HeadAsGetMiddleware:
    """Serve ``HEAD`` like ``GET``, with an empty body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # drop the chunk; the last one closes the response
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send_headers_only)
        finally:
            if "route" in as_get:  # the matched route, for the metrics' route label
                scope["route"] = as_get["route"]
