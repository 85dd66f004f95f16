"""The service's memory budget: what its memories hold, and what requests and jobs need on top.

The budget is a number of bytes, ``AMS_MEMORY_BUDGET``, or by default half of the memory
this process could still get when it started (``available_memory``: the least of the
machine's available memory, the cgroup's limit minus its use, and the address-space
limit minus the process's size). Two things are counted against it:

- resident: the tensors every memory keeps in RAM (stored patterns, models), read from
  the memories themselves (``resident`` callable) whenever a check is made;
- transient: what requests and jobs in progress have reserved (decoding a batch of
  images, growing an index, a training job's copy of its model and its working set).

``check(n, what)`` (something that will stay) and ``reserve(n, what)`` (something held
while work runs) refuse with ``MemoryBudgetExceeded`` (422, naming the limit) what could
never fit, and wait up to ``wait_s`` seconds for others' transient reservations to be
released before answering ``ServerBusy`` (503, Retry-After) to what could fit later.
Every kind calls them the same way (registry.py: create, store, train), so a new kind
only has to say what its model takes (``LiveMemory.model_bytes`` and friends).
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .exceptions import MemoryBudgetExceeded, ServerBusy

__all__ = ["MemoryBudget", "Reservation", "available_memory", "shard_budget"]

log = logging.getLogger("app.budget")

_UNLIMITED = 1 << 62


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text in ("", "max") else int(text)


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_free() -> int | None:
    """The cgroup's memory limit minus its use (v2, else v1), or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if hierarchy == "0" and controllers == "":  # v2: memory.max / memory.current
            for base in (root / rel, root):
                limit, used = _read_int(base / "memory.max"), _read_int(base / "memory.current")
                if limit is not None and limit < _UNLIMITED and used is not None:
                    return max(0, limit - used)
        elif "memory" in controllers.split(","):  # v1
            for base in (root / "memory" / rel, root / "memory"):
                limit = _read_int(base / "memory.limit_in_bytes")
                used = _read_int(base / "memory.usage_in_bytes")
                if limit is not None and limit < _UNLIMITED and used is not None:
                    return max(0, limit - used)
    return None


def _address_space_free() -> int | None:
    """RLIMIT_AS minus the process's virtual size now, or None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
    except OSError:
        pass
    return max(0, soft - size)


def available_memory() -> tuple[int, str]:
    """(bytes this process could still allocate, which limit says so): the least of the
    machine's MemAvailable, the cgroup's free memory and the free address space."""
    found = {
        "MemAvailable": _meminfo("MemAvailable"),
        "cgroup limit": _cgroup_free(),
        "RLIMIT_AS": _address_space_free(),
    }
    known = {k: v for k, v in found.items() if v is not None}
    if not known:
        return 4 << 30, "no limit found (assumed 4 GiB)"
    source = min(known, key=known.__getitem__)
    return known[source], source


def shard_budget(free: int, limit: str, share: float) -> int:
    """A Ray shard's budget without ``AMS_SHARD_MEMORY_BUDGET`` (cluster/shard.py): half of
    ``free`` bytes (what its process could get, ``available_memory``, whose binding ``limit``
    is named), and of the node's memory only the ``share`` of the node's CPUs that the shard
    reserved (``cluster.actors.cpu_share``), so that the shards Ray packs onto one node never
    promise more than it has. A per-process limit (RLIMIT_AS) is the process's alone: no share."""
    return int(free // 2 * (1.0 if limit == "RLIMIT_AS" else share))


class Reservation:
    """Bytes held against the budget until ``release`` (idempotent)."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self._budget, self.nbytes = budget, nbytes

    def release(self) -> None:
        if self.nbytes:
            self._budget._release(self.nbytes)
            self.nbytes = 0


class MemoryBudget:
    """A byte budget shared by the memories (resident) and the work in progress (transient).

    Arguments:
        limit: the budget in bytes.
        resident: returns the bytes the memories hold now (set later with ``attach``).
        wait_s: how long an admission waits for transient reservations to be released.
    """

    def __init__(self, limit: int, resident: Callable[[], int] | None = None, wait_s: float = 2.0) -> None:
        if limit < 1:
            raise ValueError(f"a memory budget needs a positive limit, got {limit}")
        self.limit = int(limit)
        self.wait_s = wait_s
        self._resident = resident or (lambda: 0)
        self._transient = 0
        self._cond = threading.Condition()

    def attach(self, resident: Callable[[], int]) -> None:
        """Count what ``resident()`` says the memories hold."""
        self._resident = resident

    @property
    def transient(self) -> int:
        return self._transient

    def usage(self) -> dict[str, int]:
        """{limit, resident, transient, free} in bytes, for /v1/info and /metrics."""
        resident = self._resident()
        free = max(0, self.limit - resident - self._transient)
        return {"limit": self.limit, "resident": resident, "transient": self._transient, "free": free}

    def _admit(self, nbytes: int, what: str, hold: bool) -> None:
        nbytes = max(0, int(nbytes))
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while True:
                headroom = self.limit - self._resident()
                if nbytes > headroom:  # could never fit, whatever others release
                    raise MemoryBudgetExceeded(what, nbytes, max(0, headroom - self._transient), self.limit)
                if nbytes <= headroom - self._transient:
                    if hold:
                        self._transient += nbytes
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerBusy(
                        f"{what} needs about {nbytes >> 20} MiB of memory that requests and jobs in "
                        "progress hold now: retry shortly",
                        retry_after=max(1, round(self.wait_s)),
                    )
                self._cond.wait(left)

    def _release(self, nbytes: int) -> None:
        with self._cond:
            self._transient -= nbytes
            self._cond.notify_all()

    def check(self, nbytes: int, what: str) -> None:
        """Refuse ``what`` unless ``nbytes`` more could be held now (see the module docstring)."""
        self._admit(nbytes, what, hold=False)

    def hold(self, nbytes: int, what: str) -> Reservation:
        """Reserve ``nbytes`` until the returned reservation is released."""
        self._admit(nbytes, what, hold=True)
        return Reservation(self, max(0, int(nbytes)))

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold ``nbytes`` while the block runs."""
        reservation = self.hold(nbytes, what)
        try:
            yield
        finally:
            reservation.release()

    def changed(self) -> None:
        """Wake waiters after the resident bytes went down (a memory or pattern deleted)."""
        with self._cond:
            self._cond.notify_all()
