"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the same methods, the same results.

    from ams_client import Client

    with Client("http://127.0.0.1:8000") as ams:          # key: api_key= or $AMS_API_KEY
        ams.create_memory("fashion", shape=(1, 28, 28))
        ams.store("fashion", images)                        # (N, 1, 28, 28) array, split as needed
        best = ams.retrieve("fashion", noisy_image).matches[0]

Each method runs one operation of ``_ops.Operations`` with this client's I/O.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx

from ._core import Op, Sleep, operation, path
from ._facts import FACTS
from ._ops import PATTERNS, Operations
from .jobs import AsyncJob, Job
from .models import Fact, JobState, PatternInfo

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["AsyncClient", "Client"]


def _blocking(op: Callable[Concatenate[Any, P], Op[R]]) -> Callable[Concatenate[Client, P], R]:
    @functools.wraps(op)
    def method(self: Client, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(op(self, *args, **kwargs))

    return method


def _awaitable(op: Callable[Concatenate[Any, P], Op[R]]) -> Callable[Concatenate[AsyncClient, P], Any]:
    @functools.wraps(op)
    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._run(op(self, *args, **kwargs))

    return method


class Client(Operations):
    """A blocking client of the associative memory service (one connection pool; use it as a
    context manager, or call ``close()``)."""

    def _open(self) -> httpx.Client:
        return httpx.Client(**self._http_kwargs())

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, op: Op[R]) -> R:
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = op.throw(error) if error is not None else op.send(value)
                except StopIteration as stop:
                    return stop.value
                value = error = None
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    continue
                try:
                    value = self._http.request(
                        step.method, step.path, params=step.params, content=step.content, headers=step.headers
                    )
                except httpx.TransportError as exc:
                    error = exc
        finally:
            op.close()

    def _make_job(self, state: JobState) -> Job:
        return Job(self, state)

    live = _blocking(Operations.live)
    ready = _blocking(Operations.ready)
    wait_ready = _blocking(Operations.wait_ready)
    metrics = _blocking(Operations.metrics)
    info = _blocking(Operations.info)
    create_memory = _blocking(Operations.create_memory)
    get_memory = _blocking(Operations.get_memory)
    list_memories = _blocking(Operations.list_memories)
    delete_memory = _blocking(Operations.delete_memory)
    store = _blocking(Operations.store)
    get_pattern = _blocking(Operations.get_pattern)
    delete_pattern = _blocking(Operations.delete_pattern)
    retrieve = _blocking(Operations.retrieve)
    search = _blocking(Operations.search)
    complete = _blocking(Operations.complete)
    lookup = _blocking(Operations.lookup)
    train = _blocking(Operations.train)
    job = _blocking(Operations.job)
    jobs = _blocking(Operations.jobs)
    cancel_job = _blocking(Operations.cancel_job)
    demo_presets = _blocking(Operations.demo_presets)
    create_demo = _blocking(Operations.create_demo)
    store_facts = _blocking(Operations.store_facts)
    get_fact = _blocking(Operations.get_fact)
    delete_fact = _blocking(Operations.delete_fact)
    query = _blocking(Operations.query)
    vocabulary = _blocking(Operations.vocabulary)
    request = _blocking(Operations.request)

    def _iterate(self, route: str, key: str, parse: Callable[[Any], R], page_size: int | None) -> Iterator[R]:
        cursor = None
        while True:
            page, cursor = self._run(self._page(route, key, parse, cursor, page_size))
            yield from page
            if cursor is None:
                return

    @operation(f"GET {PATTERNS}")
    def patterns(self, name: str, *, page_size: int | None = None) -> Iterator[PatternInfo]:
        """Every pattern of a memory in storage order (id, caption, metadata), fetched a page
        (``page_size``, default the service's 100) at a time as the iteration goes."""
        yield from self._iterate(path(PATTERNS, name=name), "patterns", PatternInfo.from_json, page_size)

    @operation(f"GET {FACTS}")
    def facts(self, name: str, *, page_size: int | None = None) -> Iterator[Fact]:
        """Every fact of a relational memory in storage order (``Fact(id, relation, args)``),
        fetched a page (``page_size``, default the service's 100) at a time as the iteration goes."""
        yield from self._iterate(path(FACTS, name=name), "facts", Fact.from_json, page_size)


class AsyncClient(Operations):
    """The asyncio client: ``Client``'s methods as coroutines (``patterns`` an async iterator,
    ``train`` an ``AsyncJob``); ``async with AsyncClient(...) as ams:`` or ``await aclose()``."""

    def _open(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(**self._http_kwargs())

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, op: Op[R]) -> R:
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = op.throw(error) if error is not None else op.send(value)
                except StopIteration as stop:
                    return stop.value
                value = error = None
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    continue
                try:
                    value = await self._http.request(
                        step.method, step.path, params=step.params, content=step.content, headers=step.headers
                    )
                except httpx.TransportError as exc:
                    error = exc
        finally:
            op.close()

    def _make_job(self, state: JobState) -> AsyncJob:
        return AsyncJob(self, state)

    live = _awaitable(Operations.live)
    ready = _awaitable(Operations.ready)
    wait_ready = _awaitable(Operations.wait_ready)
    metrics = _awaitable(Operations.metrics)
    info = _awaitable(Operations.info)
    create_memory = _awaitable(Operations.create_memory)
    get_memory = _awaitable(Operations.get_memory)
    list_memories = _awaitable(Operations.list_memories)
    delete_memory = _awaitable(Operations.delete_memory)
    store = _awaitable(Operations.store)
    get_pattern = _awaitable(Operations.get_pattern)
    delete_pattern = _awaitable(Operations.delete_pattern)
    retrieve = _awaitable(Operations.retrieve)
    search = _awaitable(Operations.search)
    complete = _awaitable(Operations.complete)
    lookup = _awaitable(Operations.lookup)
    train = _awaitable(Operations.train)
    job = _awaitable(Operations.job)
    jobs = _awaitable(Operations.jobs)
    cancel_job = _awaitable(Operations.cancel_job)
    demo_presets = _awaitable(Operations.demo_presets)
    create_demo = _awaitable(Operations.create_demo)
    store_facts = _awaitable(Operations.store_facts)
    get_fact = _awaitable(Operations.get_fact)
    delete_fact = _awaitable(Operations.delete_fact)
    query = _awaitable(Operations.query)
    vocabulary = _awaitable(Operations.vocabulary)
    request = _awaitable(Operations.request)

    async def _iterate(
        self, route: str, key: str, parse: Callable[[Any], R], page_size: int | None
    ) -> AsyncIterator[R]:
        cursor = None
        while True:
            page, cursor = await self._run(self._page(route, key, parse, cursor, page_size))
            for item in page:
                yield item
            if cursor is None:
                return

    @operation(f"GET {PATTERNS}")
    async def patterns(self, name: str, *, page_size: int | None = None) -> AsyncIterator[PatternInfo]:
        """Every pattern of a memory in storage order, a page at a time (``async for``)."""
        async for item in self._iterate(
            path(PATTERNS, name=name), "patterns", PatternInfo.from_json, page_size
        ):
            yield item

    @operation(f"GET {FACTS}")
    async def facts(self, name: str, *, page_size: int | None = None) -> AsyncIterator[Fact]:
        """Every fact of a relational memory in storage order, a page at a time (``async for``)."""
        async for item in self._iterate(path(FACTS, name=name), "facts", Fact.from_json, page_size):
            yield item
