"""Background jobs (training, demo loads): one at a time per memory, progress, energy and ETA.

A job runs its work function on a thread of its own, off the event loop and off the
request thread pool, so recalls and stores go on while it trains. ``train_workers``
jobs run at once (``FairSlots``); the others wait in state "queued", first come, first
served. Jobs live in RAM: a restart forgets them (the memory's state says what its model
has learned).

Cancellation and sharing. While a job's work runs, ``JobContext.check`` is installed as
the thread's ``memory_core.interrupt`` hook, so every training and relaxation loop of the
library polls it once per step: a cancelled job stops within one step (``JobCancelled``
leaves the work; what it was fitting is thrown away), whatever its epoch and step counts.
A job that has held its slot for ``slice_s`` seconds while another job waits hands the
slot over at its next poll and queues again behind it, so one memory's long job cannot
starve the others. A work function that runs no library loop calls ``ctx.check()`` (or
``ctx.report``, which does) itself.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from memory_core import interrupt

from .exceptions import JobRunning

__all__ = ["FairSlots", "JobCancelled", "JobContext", "JobManager", "JobRecord"]

log = logging.getLogger("app.jobs")


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class JobRecord:
    """A job's progress; mutated by its thread under ``JobManager._lock``."""

    id: str
    memory: str
    kind: str
    patterns: int = 0
    status: str = "queued"
    epoch: int = 0
    epochs: int | None = None
    energy: float | None = None
    error: str | None = None
    stop_reason: str | None = None  # why it ended: see schemas.Job
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # set once on_finish has run
    key: str = ""  # what "one job at a time" is counted by (the memory's storage id)

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    def progress(self) -> float:
        if self.status == "succeeded":
            return 1.0
        if not self.epochs:
            return 0.0
        return min(1.0, self.epoch / self.epochs)

    def eta_seconds(self, now: float) -> float | None:
        """Seconds left at the pace of the epochs done so far; None before the first."""
        if self.done:
            return 0.0 if self.status == "succeeded" else None
        if self.started_at is None or not self.epochs or self.epoch == 0:
            return None
        per_epoch = (now - self.started_at) / self.epoch
        return max(0.0, per_epoch * (self.epochs - self.epoch))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "memory": self.memory,
            "kind": self.kind,
            "status": self.status,
            "progress": self.progress(),
            "epoch": self.epoch,
            "epochs": self.epochs,
            "energy": self.energy,
            "eta_seconds": self.eta_seconds(time.time()),
            "patterns": self.patterns,
            "created_at": _utc(self.created_at),
            "started_at": _utc(self.started_at),
            "finished_at": _utc(self.finished_at),
            "error": self.error,
            "stop_reason": self.stop_reason,
        }


class JobCancelled(Exception):
    """Raised inside a job's work by ``JobContext.check`` once the job is cancelled."""


class FairSlots:
    """``count`` slots handed out first come, first served (``threading.Semaphore`` is not fair).

    Arguments:
        count: slots.
    """

    def __init__(self, count: int) -> None:
        self._cond = threading.Condition()
        self._free = count
        self._queue: deque[object] = deque()

    def acquire(self, cancelled: Callable[[], bool]) -> bool:
        """Wait for a slot in arrival order; False (and no slot) once ``cancelled()``."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while True:
                if cancelled():
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    return False
                if self._free > 0 and self._queue[0] is ticket:
                    break
                self._cond.wait(0.05)
            self._queue.popleft()
            self._free -= 1
            self._cond.notify_all()
            return True

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot now."""
        return len(self._queue)


class JobContext:
    """Handed to a job's work function: report progress, learn of cancellation, share the slot."""

    def __init__(self, manager: JobManager, job: JobRecord) -> None:
        self._manager, self.job = manager, job
        self._slot_since = time.monotonic()

    @property
    def cancelled(self) -> bool:
        return self.job.cancel.is_set()

    def check(self) -> None:
        """Raise ``JobCancelled`` once the job is cancelled; hand the worker slot to a waiting
        job when this one has held it for its time slice (and wait for it back)."""
        if self.job.cancel.is_set():
            raise JobCancelled(self.job.id)
        manager = self._manager
        if time.monotonic() - self._slot_since >= manager.slice_s and manager.slots.waiting:
            manager.slots.release()
            if not manager.slots.acquire(self.job.cancel.is_set):
                self._slot_since = math.inf  # no slot held: _run_work must not release one
                raise JobCancelled(self.job.id)
            self._slot_since = time.monotonic()

    def report(self, epoch: int, epochs: int | None = None, energy: float | None = None) -> bool:
        """Record progress after an epoch; returns False when the job should stop."""
        with self._manager._lock:
            self.job.epoch = int(epoch)
            if epochs is not None:
                self.job.epochs = int(epochs)
            if energy is not None:
                self.job.energy = float(energy)
        if self.cancelled:
            return False
        self.check()  # may hand the slot over for a while
        return True

    def stopped(self, reason: str) -> None:
        """Say why the work ended ("epochs", "energy"); a cancelled or failed job says so itself."""
        with self._manager._lock:
            self.job.stop_reason = reason

    @property
    def holds_slot(self) -> bool:
        return self._slot_since != math.inf


Work = Callable[[JobContext], None]


class JobManager:
    """Runs jobs on threads; at most one unfinished job per memory.

    Arguments:
        workers: jobs that run at once.
        keep: finished jobs remembered (oldest forgotten first).
        slice_s: seconds a running job keeps its slot while others wait (see the module docstring).
    """

    def __init__(self, workers: int = 1, keep: int = 200, slice_s: float = 2.0) -> None:
        self._lock = threading.Lock()
        self.slots = FairSlots(workers)
        self.slice_s = slice_s
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self._active: dict[str, str] = {}  # key (the memory's storage id) -> unfinished job id
        self._keep = keep
        self._closed = False

    def submit(
        self,
        memory: str,
        kind: str,
        work: Work,
        patterns: int = 0,
        epochs: int | None = None,
        on_finish: Callable[[str], None] | None = None,
        key: str | None = None,
    ) -> JobRecord:
        """Start ``work`` for ``memory``; raises JobRunning if that memory has an unfinished job.

        ``key`` (default: the name) says which jobs count as the same memory's: the storage
        id, so that a memory deleted and made again under its name is another memory.
        ``on_finish(status)`` runs once the job has ended, however it ended (even when it
        was cancelled before it started).
        """
        key = key or memory
        with self._lock:
            if self._closed:
                raise RuntimeError("the job manager is shut down")
            if key in self._active:
                job_id = self._active[key]
                raise JobRunning(f"memory {memory!r} has an unfinished job ({job_id})", job_id)
            job = JobRecord(
                id=secrets.token_hex(8), memory=memory, kind=kind, patterns=patterns, epochs=epochs, key=key
            )
            self._jobs[job.id] = job
            self._active[key] = job.id
            self._forget_old()
        threading.Thread(
            target=self._run, args=(job, work, on_finish), name=f"job-{job.id}", daemon=True
        ).start()
        return job

    def _run(self, job: JobRecord, work: Work, on_finish: Callable[[str], None] | None) -> None:
        try:
            self._run_work(job, work)
        finally:
            try:
                if on_finish is not None:
                    on_finish(job.status)
            finally:
                job.finished.set()

    def _run_work(self, job: JobRecord, work: Work) -> None:
        if not self.slots.acquire(job.cancel.is_set):
            with self._lock:
                self._finish(job, "cancelled")
            return
        ctx = JobContext(self, job)
        try:
            with self._lock:
                job.status, job.started_at = "running", time.time()
            ctx._slot_since = time.monotonic()
            with interrupt.watching(ctx.check):  # every library loop polls it (module docstring)
                work(ctx)
        except JobCancelled:
            with self._lock:
                self._finish(job, "cancelled")
        except Exception as exc:  # a failed job is reported, not raised into nowhere
            log.exception("job %s (%s on %s) failed", job.id, job.kind, job.memory)
            with self._lock:
                job.error = f"{type(exc).__name__}: {exc}"
                self._finish(job, "cancelled" if job.cancel.is_set() else "failed")
        else:
            with self._lock:
                self._finish(job, "cancelled" if job.cancel.is_set() else "succeeded")
        finally:
            if ctx.holds_slot:
                self.slots.release()

    def _finish(self, job: JobRecord, status: str) -> None:
        job.status, job.finished_at = status, time.time()
        if status != "succeeded" or job.stop_reason is None:
            job.stop_reason = {"succeeded": "done"}.get(status, status)
        if self._active.get(job.key) == job.id:
            del self._active[job.key]

    def _forget_old(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.done]
        for jid in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[jid]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_dict()

    def list(self, memory: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [j.to_dict() for j in self._jobs.values() if memory is None or j.memory == memory]

    def active(self, key: str) -> str | None:
        """The unfinished job id of the memory with this key, or None."""
        with self._lock:
            return self._active.get(key)

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.to_dict() for j in self._jobs.values() if not j.done]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Ask a job to stop (within one step of its work); returns its state, or None if unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if not job.done:
                job.cancel.set()
            return job.to_dict()

    def cancel_memory(self, key: str, wait: float | None = None) -> bool:
        """Cancel the unfinished job of the memory with this key, and wait up to ``wait``
        seconds for it to end; True when none is left running."""
        with self._lock:
            job_id = self._active.get(key)
            job = self._jobs.get(job_id) if job_id else None
            if job is not None:
                job.cancel.set()
        if job is None:
            return True
        return job.finished.wait(wait) if wait else job.finished.is_set()

    def shutdown(self, wait: float = 10.0) -> None:
        """Cancel every job and wait for them to end (up to ``wait`` seconds in all)."""
        with self._lock:
            self._closed = True
            jobs = [j for j in self._jobs.values() if not j.finished.is_set()]
            for job in jobs:
                job.cancel.set()
        deadline = time.monotonic() + wait
        for job in jobs:
            job.finished.wait(max(0.0, deadline - time.monotonic()))
