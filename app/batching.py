"""Micro-batching of concurrent recalls, per memory.

Concurrent recalls of one memory (retrieve, complete, lookup) join that memory's queue
and are answered together by one batched memory call (``LiveMemory.recall_batch``,
``lookup_text``, ``lookup_captions``): one pass over the stored patterns under one read
lock. Each caller gets exactly its own answer: its row of the batch, its own ``k``
matches.

When a batch is cut. The first recall to arrive at an idle queue waits up to
``max_wait`` for company; the batch is cut as soon as it holds ``max_batch`` recalls or
``max_wait`` has passed both since the oldest recall arrived and since the memory's last
batch was answered. One batch per memory runs at a time, so under load the recalls that
arrive while a batch computes form the next one, joined by the callers just answered
that send again within ``max_wait``: batches grow with the load, and a lone caller pays
at most ``max_wait`` (0 turns the wait off; ``max_batch`` = 1 turns batching off).

Groups. Calls that cannot share one memory call are split into groups, run one after
the other: by operation (recall, caption -> pattern, pattern -> captions), by ``steps``,
and by whether a mask was given (a kind may treat "no mask" otherwise than "all known":
a PC memory recalls a noisy cue iteratively but clamps a masked one).

Threads. The queue lives on the event loop (no thread waits for company). A whole batch
is one worker-thread hop: on that thread each caller's ``prepare`` (decoding its cue),
the batched calls, and each caller's ``finish`` (turning its answer into its response:
PNG encoding, the response model). Thread hops, not the work, were what the event loop
spent most of its time on under load (py-spy, scripts/bench_service.py).

Errors. What goes wrong in one caller's ``prepare`` or ``finish`` (a bad picture, say)
is that caller's alone. An error that concerns the memory (empty, not trained) goes to
every caller of the group. Any other error in a batched call makes the group rerun its
cues one at a time, so that one caller's cue never fails another's recall. A caller that
goes away (client disconnect) is dropped from its batch; on shutdown the callers still
waiting get an error rather than waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio.to_thread
import torch
from torch import Tensor

from memory_core import EmptyMemoryError

from .exceptions import MemoryFailed, NotTrained, ShardUnavailable
from .kinds import CaptionLookup, LiveMemory, Recall, TextLookup
from .metrics import Metrics

__all__ = ["Batcher", "Cue"]

log = logging.getLogger("app.batching")

# Errors that say something about the memory, not about one cue: every caller gets them
# (MemoryEmpty is an EmptyMemoryError too; ShardUnavailable: a shard of it is restarting).
_MEMORY_ERRORS = (EmptyMemoryError, NotTrained, MemoryFailed, ShardUnavailable)

T = TypeVar("T")
Answer = Recall | TextLookup | CaptionLookup
Cue = tuple[Tensor, Tensor | None]  # (D,) float32 cue (or (E,) caption embedding), (D,) bool mask
Outcome = tuple[Any, BaseException | None]  # (result, None) or (None, error)


@dataclass(eq=False)
class _Waiting:
    """One caller's recall, queued."""

    op: str  # "recall", "lookup_text" or "lookup_captions"
    cue: Cue | Callable[[], Cue | tuple[Tensor, Tensor | None, int, int]]  # or what decodes it
    k: int
    steps: int
    finish: Callable[[Any], Any] | None  # builds the caller's response from its answer
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class _Ready:
    """A caller's recall with its cue decoded (on the batch's thread)."""

    waiting: _Waiting
    cue: Tensor  # (D,)
    mask: Tensor | None  # (D,)
    k: int
    steps: int

    @property
    def group(self) -> tuple[str, int, bool]:
        return self.waiting.op, self.steps, self.mask is not None


class _Queue:
    """The recalls of one memory waiting for their batch, and the task that serves them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # asyncio objects belong to one loop
        self.waiting: list[_Waiting] = []
        self.batch: list[_Waiting] = []  # the batch computing now
        self.free_since = 0.0  # perf_counter() when the last batch was answered
        self.arrived = asyncio.Event()  # set when a recall joins
        self.task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Recalls not yet answered: waiting plus computing."""
        return len(self.waiting) + len(self.batch)


class Batcher:
    """Serves recalls in per-memory micro-batches (see the module docstring).

    Arguments:
        max_batch: most recalls in one batched call.
        max_wait_ms: longest a recall waits for company, in milliseconds.
        metrics: where batch sizes, queue waits and batch times are recorded (optional).
    """

    def __init__(self, max_batch: int, max_wait_ms: float, metrics: Metrics | None = None) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0  # seconds
        self._metrics = metrics
        # Keyed by the live memory itself: a deleted memory's queue goes with it, and a new
        # memory of the same name never shares a batch with the old one.
        self._queues: weakref.WeakKeyDictionary[LiveMemory, _Queue] = weakref.WeakKeyDictionary()

    def depths(self) -> list[tuple[LiveMemory, int]]:
        """(memory, recalls queued or computing) for every memory with a queue (for /metrics).

        Read from the scrape's thread without a lock: each number is a moment's snapshot.
        """
        return [(live, q.depth) for live, q in list(self._queues.items())]

    # --- what callers await ------------------------------------------------------------
    async def recall(
        self,
        live: LiveMemory,
        cue: Cue | Callable[[], Cue],
        k: int,
        steps: int,
        finish: Callable[[Recall], T] | None = None,
    ) -> Recall | T:
        """Recall from one cue: ``(cue (D,), mask (D,) bool or None)``, or a function that
        decodes it on the batch's thread (its exceptions are this caller's) and returns that
        pair, or ``(cue, mask, k, steps)`` when k and steps come with what it decodes.

        Returns what ``live.recall(cue, mask, k, steps)`` returns (raises what it raises),
        or ``finish(recall)`` when given: the caller's response, built on the batch's thread.
        """
        return await self._submit(live, "recall", cue, k, steps, finish)

    async def lookup_text(
        self, live: LiveMemory, embedding: Tensor, k: int, finish: Callable[[TextLookup], T] | None = None
    ) -> TextLookup | T:
        """Caption -> pattern for one caption embedding (E,): a ``TextLookup`` of one query
        (or ``finish`` of it)."""
        return await self._submit(live, "lookup_text", (embedding, None), k, 1, finish)

    async def lookup_captions(
        self,
        live: LiveMemory,
        cue: Cue | Callable[[], Cue],
        k: int,
        finish: Callable[[CaptionLookup], T] | None = None,
    ) -> CaptionLookup | T:
        """Pattern (D,) (optionally partial) -> captions: a ``CaptionLookup`` of one query
        (or ``finish`` of it)."""
        return await self._submit(live, "lookup_captions", cue, k, 1, finish)

    async def _submit(
        self,
        live: LiveMemory,
        op: str,
        cue: Cue | Callable[[], Cue],
        k: int,
        steps: int,
        finish: Callable[[Any], Any] | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(live)
        if queue is None or queue.loop is not loop:  # (a new loop: an app served again, in tests)
            queue = self._queues[live] = _Queue(loop)
        waiting = _Waiting(op, cue, k, steps, finish, loop.create_future())
        queue.waiting.append(waiting)
        queue.arrived.set()
        if queue.task is None:
            queue.task = loop.create_task(self._serve(live, queue), name=f"recalls-{live.name}")
        # A cancelled caller cancels its future too, and _serve then leaves it out.
        return await waiting.future

    # --- the queue's task (event loop) -------------------------------------------------
    async def _serve(self, live: LiveMemory, queue: _Queue) -> None:
        """Cut and run batches until the queue is empty."""
        try:
            while queue.waiting:
                await self._gather(queue)
                batch = queue.waiting[: self.max_batch]
                del queue.waiting[: self.max_batch]
                batch = [w for w in batch if not w.future.done()]  # callers that went away
                if not batch:
                    continue
                queue.batch = batch
                start = time.perf_counter()
                outcomes, timings = await anyio.to_thread.run_sync(_run_batch, live, batch)
                for w, (result, error) in zip(batch, outcomes, strict=True):
                    _settle(w, result, error)
                queue.batch = []
                queue.free_since = time.perf_counter()
                self._record(live, batch, start, timings)
        except BaseException as exc:  # a bug, or shutdown: no caller may be left waiting forever
            error = exc if isinstance(exc, Exception) else RuntimeError("the service is shutting down")
            for w in [*queue.batch, *queue.waiting]:
                _settle(w, error=error)
            queue.waiting.clear()
            raise
        finally:
            queue.batch, queue.task = [], None

    async def _gather(self, queue: _Queue) -> None:
        """Wait until the batch is full, or ``max_wait`` has passed since its oldest recall
        arrived and since the last batch was answered.

        The second clock is for load: recalls that queued while a batch computed have
        waited long enough by its end, and cutting them at once splits closed-loop clients
        into two half-size batches that alternate (the callers just answered are still
        sending their next requests). A short wait after each batch lets them rejoin:
        measured at c = 32 with the default 2 ms: batches of 25 instead of 16 (32 at 5 ms). A lone
        caller still waits at most ``max_wait``."""
        while len(queue.waiting) < self.max_batch:
            since = max(queue.waiting[0].queued_at, queue.free_since)
            left = since + self.max_wait - time.perf_counter()  # seconds
            if left <= 0:
                return
            queue.arrived.clear()
            try:
                await asyncio.wait_for(queue.arrived.wait(), left)
            except TimeoutError:
                return

    def _record(
        self, live: LiveMemory, batch: list[_Waiting], start: float, timings: list[tuple[int, float]]
    ) -> None:
        if self._metrics is None:
            return
        for w in batch:
            self._metrics.recall_queue_wait.observe(start - w.queued_at)
        for size, seconds in timings:
            self._metrics.recall_batch_size.labels(live.kind).observe(size)
            self._metrics.recall_batch_seconds.labels(live.kind).observe(seconds)


# --- a batch's work (one worker thread) ---------------------------------------------------
def _run_batch(live: LiveMemory, batch: list[_Waiting]) -> tuple[list[Outcome], list[tuple[int, float]]]:
    """Decode every cue, run each group's batched call, build every response.

    Returns one outcome per caller, in order, and (size, seconds) of each batched call.
    """
    outcomes: list[Outcome] = [(None, None)] * len(batch)
    groups: dict[tuple[str, int, bool], list[tuple[int, _Ready]]] = {}
    for i, w in enumerate(batch):
        try:
            cue, mask, *given = w.cue() if callable(w.cue) else w.cue
        except Exception as exc:
            outcomes[i] = (None, exc)
            continue
        k, steps = given if given else (w.k, w.steps)  # decoded with the cue, or as submitted
        ready = _Ready(w, cue, mask, k, steps)
        groups.setdefault(ready.group, []).append((i, ready))
    timings = []
    for members in groups.values():
        group = [r for _, r in members]
        start = time.perf_counter()
        try:
            answers = _call(live, group)
        except _MEMORY_ERRORS as exc:
            for i, _ in members:
                outcomes[i] = (None, _clone(exc))  # one exception object per caller
            continue
        except Exception as exc:
            if len(group) == 1:
                outcomes[members[0][0]] = (None, exc)
                continue
            # Something in one cue (or a bug): each alone, so that errors stay their own.
            log.warning("a batch of %d recalls failed (%r); recalling them one by one", len(group), exc)
            for i, r in members:
                try:
                    (answer,) = _call(live, [r])
                except Exception as one:
                    outcomes[i] = (None, one)
                else:
                    outcomes[i] = _finish(r.waiting, answer)
            continue
        timings.append((len(group), time.perf_counter() - start))
        for (i, r), answer in zip(members, answers, strict=True):
            outcomes[i] = _finish(r.waiting, answer)
    return outcomes, timings


def _clone(exc: BaseException) -> BaseException:
    """A copy of an exception, whatever its constructor takes (its args and attributes)."""
    new = type(exc).__new__(type(exc))
    new.args = exc.args
    new.__dict__.update(exc.__dict__)
    return new


def _finish(w: _Waiting, answer: Answer) -> Outcome:
    try:
        return (answer if w.finish is None else w.finish(answer)), None
    except Exception as exc:  # this caller's response failed: this caller's error
        return None, exc


def _call(live: LiveMemory, group: list[_Ready]) -> list[Answer]:
    """One batched memory call for the recalls of one group; one answer per recall."""
    op, steps = group[0].waiting.op, group[0].steps
    cues = torch.stack([r.cue for r in group])  # (B, D)
    masks = torch.stack([r.mask for r in group]) if group[0].mask is not None else None  # (B, D)
    ks = [r.k for r in group]
    k = max(ks)
    # Matches come best first with ties to the lower row, so the first k of the batch's
    # largest k are exactly what each caller's own k would have given.
    if op == "recall":
        recalls = live.recall_batch(cues, masks, k, steps)
        return [
            rec if len(rec.matches) <= kb else replace(rec, matches=rec.matches[:kb])
            for rec, kb in zip(recalls, ks, strict=True)
        ]
    if op == "lookup_text":
        found = live.lookup_text(cues, k)
        return [
            TextLookup(
                outputs=found.outputs[b : b + 1],  # (1, D)
                matches=[found.matches[b][:kb]],
                stored=found.stored[b : b + 1, :kb],  # (1, k, D)
                energies=[found.energies[b]],
                state=found.state,
                trained_count=found.trained_count,
            )
            for b, kb in enumerate(ks)
        ]
    if op == "lookup_captions":
        found = live.lookup_captions(cues, masks, k)
        return [
            CaptionLookup(
                matches=[found.matches[b][:kb]],
                energies=[found.energies[b]],
                state=found.state,
                trained_count=found.trained_count,
            )
            for b, kb in enumerate(ks)
        ]
    raise ValueError(f"unknown batched operation {op!r}")


def _settle(w: _Waiting, result: Any = None, error: BaseException | None = None) -> None:
    if w.future.done():  # the caller went away meanwhile
        return
    if error is not None:
        w.future.set_exception(error)
    else:
        w.future.set_result(result)
