"""Background jobs (training): one at a time per memory, progress, energy and ETA.

A job runs its work function on a thread of its own, off the event loop and off the
request thread pool, so recalls and stores go on while it trains. ``train_workers``
jobs run at once; the others wait in state "queued". The work function reports each
epoch through ``JobContext.report``, which returns False once the job is cancelled
(the work then stops at the next epoch). Jobs live in RAM: a restart forgets them
(the memory's state says what its model has learned).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .exceptions import JobRunning

__all__ = ["JobContext", "JobManager", "JobRecord"]

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


class JobContext:
    """Handed to a job's work function: report progress, learn of cancellation."""

    def __init__(self, manager: JobManager, job: JobRecord) -> None:
        self._manager, self.job = manager, job

    @property
    def cancelled(self) -> bool:
        return self.job.cancel.is_set()

    def report(self, epoch: int, epochs: int | None = None, energy: float | None = None) -> bool:
        """Record progress after an epoch; returns False when the job should stop."""
        with self._manager._lock:
            self.job.epoch = int(epoch)
            if epochs is not None:
                self.job.epochs = int(epochs)
            if energy is not None:
                self.job.energy = float(energy)
        return not self.cancelled

    def stopped(self, reason: str) -> None:
        """Say why the work ended ("epochs", "energy"); a cancelled or failed job says so itself."""
        with self._manager._lock:
            self.job.stop_reason = reason


Work = Callable[[JobContext], None]


class JobManager:
    """Runs jobs on threads; at most one unfinished job per memory.

    Arguments:
        workers: jobs that run at once.
        keep: finished jobs remembered (oldest forgotten first).
    """

    def __init__(self, workers: int = 1, keep: int = 200) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers)
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self._active: dict[str, str] = {}  # memory name -> unfinished job id
        self._threads: dict[str, threading.Thread] = {}
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
    ) -> JobRecord:
        """Start ``work`` for ``memory``; raises JobRunning if that memory has an unfinished job.

        ``on_finish(status)`` runs once the job has ended, however it ended (even when it
        was cancelled before it started).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the job manager is shut down")
            if memory in self._active:
                job_id = self._active[memory]
                raise JobRunning(f"memory {memory!r} has an unfinished job ({job_id})", job_id)
            job = JobRecord(
                id=secrets.token_hex(8), memory=memory, kind=kind, patterns=patterns, epochs=epochs
            )
            self._jobs[job.id] = job
            self._active[memory] = job.id
            self._forget_old()
            thread = threading.Thread(
                target=self._run, args=(job, work, on_finish), name=f"job-{job.id}", daemon=True
            )
            self._threads[job.id] = thread
        thread.start()
        return job

    def _run(self, job: JobRecord, work: Work, on_finish: Callable[[str], None] | None) -> None:
        try:
            self._run_work(job, work)
        finally:
            if on_finish is not None:
                on_finish(job.status)

    def _run_work(self, job: JobRecord, work: Work) -> None:
        with self._slots:
            with self._lock:
                if job.cancel.is_set():
                    self._finish(job, "cancelled")
                    return
                job.status, job.started_at = "running", time.time()
            try:
                work(JobContext(self, job))
            except Exception as exc:  # a failed job is reported, not raised into nowhere
                log.exception("job %s (%s on %s) failed", job.id, job.kind, job.memory)
                with self._lock:
                    job.error = f"{type(exc).__name__}: {exc}"
                    self._finish(job, "failed")
                return
            with self._lock:
                self._finish(job, "cancelled" if job.cancel.is_set() else "succeeded")

    def _finish(self, job: JobRecord, status: str) -> None:
        job.status, job.finished_at = status, time.time()
        if status != "succeeded" or job.stop_reason is None:
            job.stop_reason = {"succeeded": "done"}.get(status, status)
        if self._active.get(job.memory) == job.id:
            del self._active[job.memory]
        self._threads.pop(job.id, None)

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

    def active(self, memory: str) -> str | None:
        """The memory's unfinished job id, or None."""
        with self._lock:
            return self._active.get(memory)

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.to_dict() for j in self._jobs.values() if not j.done]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Ask a job to stop (at its next epoch); returns its state, or None if unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if not job.done:
                job.cancel.set()
            return job.to_dict()

    def cancel_memory(self, memory: str, wait: float | None = None) -> None:
        """Cancel the memory's unfinished job, and wait up to ``wait`` seconds for it to end."""
        with self._lock:
            job_id = self._active.get(memory)
            thread = self._threads.get(job_id) if job_id else None
            if job_id:
                self._jobs[job_id].cancel.set()
        if thread is not None and wait:
            thread.join(wait)

    def shutdown(self, wait: float = 10.0) -> None:
        """Cancel every job and wait for their threads (up to ``wait`` seconds in all)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads.values())
            for job in self._jobs.values():
                job.cancel.set()
        deadline = time.monotonic() + wait
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
