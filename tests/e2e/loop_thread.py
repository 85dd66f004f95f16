"""Running coroutines from blocking test code, whatever runs in the main thread: once a browser
test has started the session's browser, pytest-playwright's sync API keeps an event loop
running there, and ``asyncio.run`` or ``loop.run_until_complete`` would refuse to start."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop on a thread of its own: blocking test code runs coroutines on it
    whatever else runs in the main thread (pytest-playwright's sync API keeps a loop
    running there once a browser test has started the session's browser)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-asyncio", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result (or its exception), run to the end on the loop's thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` that works while another loop runs in this thread: a fresh loop on a
    thread of its own, closed afterwards."""
    runner = LoopThread()
    try:
        return runner.run(coroutine)
    finally:
        runner.close()
