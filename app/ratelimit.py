"""Per-key rate limits: a token bucket per API key (or client address), 429 with Retry-After.

With ``AMS_RATE_LIMIT`` = r > 0, each identity the gate names (``ams.identity``: the full
key, the read key, or without keys each client address) may send r requests per second
on average and ``AMS_RATE_BURST`` (default 2 r) at once; a request over that gets 429
``rate_limited`` with ``Retry-After`` (whole seconds until a token is back) before its
body is read. Only /v1 is counted: health checks and metrics never are. Buckets are kept
for the 10 000 identities seen last.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import service_error_response
from .exceptions import RateLimited

__all__ = ["RateLimit", "TokenBuckets"]


class TokenBuckets:
    """Token buckets by identity: ``rate`` tokens per second, at most ``burst`` held.

    Arguments:
        rate: tokens per second (> 0).
        burst: bucket size (>= 1).
        keep: identities remembered (least recently seen forgotten first).
    """

    def __init__(self, rate: float, burst: int, keep: int = 10_000) -> None:
        self.rate, self.burst, self.keep = rate, max(1, burst), keep
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # id -> (tokens, at)

    def take(self, identity: str, now: float | None = None) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is back."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[identity] = (tokens, now)
        if len(self._buckets) > self.keep:
            self._buckets.popitem(last=False)
        return wait


class RateLimit:
    """Pure ASGI middleware: 429 for identities over their rate (see the module docstring).

    Arguments:
        app: the rest of the application.
        rate: requests per second per identity (> 0).
        burst: requests at once on top (0: two seconds' worth).
    """

    def __init__(self, app: ASGIApp, rate: float, burst: int = 0) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst or math.ceil(2 * rate))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            identity = scope.get("ams.identity", "an unknown client")
            wait = self.buckets.take(identity)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                error = RateLimited(
                    f"too many requests from {identity} "
                    f"(AMS_RATE_LIMIT = {self.buckets.rate:g}/s, burst {self.buckets.burst}): retry in {retry} s",
                    retry,
                )
                await service_error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
