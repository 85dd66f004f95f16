"""Micro-batching of concurrent recalls, per memory.

Concurrent recalls of one memory (retrieve, complete, lookup) join that memory's queue
and are answered together by one ``LiveMemory.recall_batch`` call: one pass over the
stored patterns, one read lock, one worker-thread hop for the whole batch. Each caller
gets exactly its own answer (its row of the batch, its own ``k`` matches).

When a batch is cut. The first recall to arrive at an idle queue waits up to
``max_wait`` for company; the batch is cut as soon as it holds ``max_batch`` recalls
or the oldest recall has waited ``max_wait``. One batch per memory runs at a time, so
under load the recalls that arrive while a batch computes form the next one at once
(they have waited already): batches grow with the load, and a lone caller pays at most
``max_wait`` (0 turns the wait off; ``max_batch`` = 1 turns batching off).

Three operations are batched, each by its own batched method of ``LiveMemory``:
``recall`` (retrieve, complete: ``recall_batch``), ``lookup_text`` (caption -> pattern:
``lookup_text``) and ``lookup_captions`` (pattern -> captions: ``lookup_captions``).
Calls that cannot share one call are split into groups: a batch holds one group per
(operation, steps, masked), run one after the other (a kind may treat "no mask"
otherwise than "all known": a PC memory recalls a noisy cue iteratively but clamps a
masked one).

The queue lives on the event loop (no thread waits for company); the batched call runs
on a worker thread, and so does each caller's ``finish`` (what turns its answer into its
response: PNG encoding, the response model), so that a batch costs one thread hop, not
one per caller. A caller that goes away (client disconnect) is dropped from its
batch. An error that concerns the memory (empty, not trained) goes to every caller of
the batch; any other error is isolated by recalling that batch's cues one at a time,
so that one caller's bad cue never fails another's recall.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import torch
from torch import Tensor

from memory_core import EmptyMemoryError

from .kinds import CaptionLookup, LiveMemory, NotTrained, Recall, TextLookup

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Batcher"]

log = logging.getLogger("app.batching")

# Errors that say something about the memory, not about one cue: every caller gets them.
_MEMORY_ERRORS = (EmptyMemoryError, NotTrained)

T = TypeVar("T")


Answer = Recall | TextLookup | CaptionLookup


@dataclass(eq=False)
class _Waiting:
    """One caller's recall, queued."""

    op: str  # "recall", "lookup_text" or "lookup_captions"
    cue: Tensor  # (D,) float32; for lookup_text the caption embedding (E,)
    mask: Tensor | None  # (D,) bool, True = known
    k: int
    steps: int
    finish: Callable[[Answer], Any] | None  # builds the caller's response from its answer
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def group(self) -> tuple[str, int, bool]:
        return self.op, self.steps, self.mask is not None


class _Queue:
    """The recalls of one memory waiting for their batch, and the task that serves them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # asyncio objects belong to one loop
        self.waiting: list[_Waiting] = []
        self.batch: list[_Waiting] = []  # the batch computing now
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

    async def recall(
        self,
        live: LiveMemory,
        cue: Tensor,
        mask: Tensor | None,
        k: int,
        steps: int,
        finish: Callable[[Recall], T] | None = None,
    ) -> Recall | T:
        """Recall from one cue (D,) with an optional mask (D,) bool, batched with concurrent callers.

        Returns what ``live.recall(cue, mask, k, steps)`` returns (raises what it raises), or
        ``finish(recall)`` when given: the caller's response, built on the batch's worker
        thread (one thread hop for the batch instead of one more per caller).
        """
        return await self._submit(live, "recall", cue, mask, k, steps, finish)

    async def lookup_text(
        self, live: LiveMemory, embedding: Tensor, k: int, finish: Callable[[TextLookup], T] | None = None
    ) -> TextLookup | T:
        """Caption -> pattern for one caption embedding (E,): a ``TextLookup`` of one query
        (or ``finish`` of it)."""
        return await self._submit(live, "lookup_text", embedding, None, k, 1, finish)

    async def lookup_captions(
        self,
        live: LiveMemory,
        cue: Tensor,
        mask: Tensor | None,
        k: int,
        finish: Callable[[CaptionLookup], T] | None = None,
    ) -> CaptionLookup | T:
        """Pattern (D,) (optionally partial) -> captions: a ``CaptionLookup`` of one query
        (or ``finish`` of it)."""
        return await self._submit(live, "lookup_captions", cue, mask, k, 1, finish)

    async def _submit(
        self,
        live: LiveMemory,
        op: str,
        cue: Tensor,
        mask: Tensor | None,
        k: int,
        steps: int,
        finish: Callable[[Any], Any] | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(live)
        if queue is None or queue.loop is not loop:  # (a new loop: an app served again, in tests)
            queue = self._queues[live] = _Queue(loop)
        waiting = _Waiting(op, cue, mask, k, steps, finish, loop.create_future())
        queue.waiting.append(waiting)
        queue.arrived.set()
        if queue.task is None:
            queue.task = loop.create_task(self._serve(live, queue), name=f"recalls-{live.name}")
        # A cancelled caller cancels its future too, and _serve then leaves it out.
        return await waiting.future

    # --- the queue's task -------------------------------------------------------------
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
                await self._run(live, batch)
                queue.batch = []
        except BaseException as exc:  # a bug, or shutdown: no caller may be left waiting forever
            error = exc if isinstance(exc, Exception) else RuntimeError("the service is shutting down")
            for w in [*queue.batch, *queue.waiting]:
                _settle(w, error=error)
            queue.waiting.clear()
            raise
        finally:
            queue.batch, queue.task = [], None

    async def _gather(self, queue: _Queue) -> None:
        """Wait until the batch is full or its oldest recall has waited ``max_wait``."""
        while len(queue.waiting) < self.max_batch:
            left = queue.waiting[0].queued_at + self.max_wait - time.perf_counter()  # seconds
            if left <= 0:
                return
            queue.arrived.clear()
            try:
                await asyncio.wait_for(queue.arrived.wait(), left)
            except TimeoutError:
                return

    async def _run(self, live: LiveMemory, batch: list[_Waiting]) -> None:
        """Run one batch, group by group, and hand each caller its answer."""
        groups: dict[tuple[str, int, bool], list[_Waiting]] = {}
        for w in batch:
            groups.setdefault(w.group, []).append(w)
        for group in groups.values():
            start = time.perf_counter()
            if self._metrics is not None:
                for w in group:
                    self._metrics.recall_queue_wait.observe(start - w.queued_at)
            try:
                outcomes = await anyio.to_thread.run_sync(_run_group, live, group)
            except _MEMORY_ERRORS as exc:
                for w in group:
                    _settle(w, error=type(exc)(*exc.args))
                continue
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0], error=exc)
                    continue
                # Something in one cue (or a bug): recall each alone so that errors stay
                # with the caller they belong to.
                log.warning("a batch of %d recalls failed (%r); recalling them one by one", len(group), exc)
                for w in group:
                    try:
                        (outcome,) = await anyio.to_thread.run_sync(_run_group, live, [w])
                    except Exception as one:
                        _settle(w, error=one)
                    else:
                        _settle(w, *outcome)
                continue
            if self._metrics is not None:
                self._metrics.recall_batch_size.labels(live.kind).observe(len(group))
                self._metrics.recall_batch_seconds.labels(live.kind).observe(time.perf_counter() - start)
            for w, outcome in zip(group, outcomes, strict=True):
                _settle(w, *outcome)


def _run_group(live: LiveMemory, group: list[_Waiting]) -> list[tuple[Any, BaseException | None]]:
    """The group's batched call, then each caller's ``finish`` (on a worker thread).

    Returns (result, None) or (None, error) per caller: an error in one caller's
    ``finish`` is that caller's alone.
    """
    outcomes: list[tuple[Any, BaseException | None]] = []
    for w, answer in zip(group, _recall_group(live, group), strict=True):
        try:
            outcomes.append((answer if w.finish is None else w.finish(answer), None))
        except Exception as exc:
            outcomes.append((None, exc))
    return outcomes


def _recall_group(live: LiveMemory, group: list[_Waiting]) -> list[Answer]:
    """One batched call for the calls of one group (on a worker thread); one answer per call."""
    op, steps = group[0].op, group[0].steps
    cues = torch.stack([w.cue for w in group])  # (B, D)
    masks = torch.stack([w.mask for w in group]) if group[0].mask is not None else None  # (B, D)
    k = max(w.k for w in group)
    # Matches come best first with ties to the lower row, so the first k of the batch's
    # largest k are exactly what each caller's own k would have given.
    if op == "recall":
        recalls = live.recall_batch(cues, masks, k, steps)
        return [
            rec if len(rec.matches) <= w.k else replace(rec, matches=rec.matches[: w.k])
            for w, rec in zip(group, recalls, strict=True)
        ]
    if op == "lookup_text":
        found = live.lookup_text(cues, k)
        return [
            TextLookup(
                outputs=found.outputs[b : b + 1],  # (1, D)
                matches=[found.matches[b][: w.k]],
                stored=found.stored[b : b + 1, : w.k],  # (1, k, D)
                energies=[found.energies[b]],
                state=found.state,
                trained_count=found.trained_count,
            )
            for b, w in enumerate(group)
        ]
    if op == "lookup_captions":
        found = live.lookup_captions(cues, masks, k)
        return [
            CaptionLookup(
                matches=[found.matches[b][: w.k]],
                energies=[found.energies[b]],
                state=found.state,
                trained_count=found.trained_count,
            )
            for b, w in enumerate(group)
        ]
    raise ValueError(f"unknown batched operation {op!r}")


def _settle(w: _Waiting, result: Any = None, error: BaseException | None = None) -> None:
    if w.future.done():  # the caller went away meanwhile
        return
    if error is not None:
        w.future.set_exception(error)
    else:
        w.future.set_result(result)
