"""Request body size limit (AMS_MAX_REQUEST_BYTES), counted while reading.

A declared Content-Length over the limit is refused before reading anything. Any
other body (chunked, or a lying Content-Length) is read chunk by chunk and counted;
past the limit the app is never called and the client gets 413 with the service's
error shape. A body within the limit is handed to the app unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 ``request_too_large`` for bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        response = error_response(
            413,
            "request_too_large",
            f"request body {size} exceeds the limit of {self.max_bytes} bytes (AMS_MAX_REQUEST_BYTES)",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    async def _drain(self, receive: Receive, more: bool) -> None:
        """Read (and drop) what is left of an oversized body, up to a bound, so that the
        client, still sending, gets to read the 413 instead of a reset connection."""
        dropped, cap = 0, max(self.max_bytes, 1 << 20)
        while more and dropped <= cap:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > self.max_bytes:
                await self._refuse(scope, receive, send, f"of {length} bytes")
                return
        # Read and count the whole body first (it is needed whole anyway: JSON, multipart).
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._drain(receive, more=message.get("more_body", False))
                await self._refuse(scope, receive, send, "of more bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False
        data = b"".join(chunks)

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as a server would

        await self.app(scope, replay, send)
