"""Interrupting long computations from outside: a per-thread hook that the library's loops poll.

Training and relaxation loops call ``poll()`` once per step (a thread-local lookup and a
call: well under a microsecond, against milliseconds of work per step). By default it does
nothing. A caller that runs a fit on a thread of its own installs a hook for that thread
with ``watching(hook)``; the hook may raise (e.g. to cancel the work: the exception leaves
the fit as any error would, and the model being fit must then be thrown away) or block for
a while (e.g. to hand a shared worker slot to other work). The library itself never
decides to stop: it only gives the caller a place to do so within one step, however long
the step counts, epochs and batches asked for are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["poll", "watching"]

_local = threading.local()


def poll() -> None:
    """Call this thread's hook, if one is installed (see ``watching``)."""
    hook = getattr(_local, "hook", None)
    if hook is not None:
        hook()


@contextmanager
def watching(hook: Callable[[], None]) -> Iterator[None]:
    """Install ``hook`` for the calling thread while the block runs (nesting restores the outer one)."""
    outer = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = outer
