"""Fixtures of the end-to-end client and CLI tests: one real service process for the whole
session (``python -m uvicorn app.main:app`` on a free port over a temporary data directory,
with API keys and small limits, so that uploads must be split), and ``ams``: the Python
client under test, blocking or asyncio (each test runs with both). And for the demo page's
layout tests: ``size`` (phone, laptop) and ``visitor``, a page at that size (screens.py)."""

from __future__ import annotations

import asyncio
import inspect
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))  # live_server.py
from ams_client import AsyncClient, AsyncJob, Client
from live_server import LiveServer
from playwright.sync_api import Browser, Page
from screens import SIZES, TIMEOUT_MS

API_KEY, READ_KEY = "e2e-full-key", "e2e-read-key"
MAX_REQUEST_BYTES, MAX_BATCH, MAX_IMAGE_PIXELS = 65536, 40, 100_000


@pytest.fixture(scope="session")
def ams_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service, with a full and a read-only key, 64 KiB requests, 40 patterns a store."""
    server = LiveServer(
        tmp_path_factory.mktemp("ams-e2e") / "data",
        AMS_API_KEY=API_KEY,
        AMS_READ_API_KEY=READ_KEY,
        AMS_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
        AMS_MAX_BATCH=str(MAX_BATCH),
        AMS_MAX_IMAGE_PIXELS=str(MAX_IMAGE_PIXELS),
        AMS_TORCH_THREADS="1",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def europe(ams_server: LiveServer) -> Iterator[str]:
    """The bundled knowledge base of European countries (176 facts), loaded from its demo
    preset and trained with the defaults (60 epochs), once for the client and CLI tests
    that query it: the memory's name."""
    with Client(ams_server.url, api_key=API_KEY) as client:
        memory, load = client.create_demo("europe", name="e2e-europe")
        load.wait(progress=False, timeout=120)
        client.train(memory.name).wait(progress=False, timeout=300)
        yield memory.name


class Blocking:
    """Drives an ``AsyncClient`` (or an ``AsyncJob`` it returns) from blocking test code on
    one event loop: coroutines are run to their result, async iterators collected into a
    list, so one test body checks both clients."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target, self._loop = target, loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **kw: self._loop.run_until_complete(self._collect(attr(*a, **kw)))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **kw: self._wrap(self._loop.run_until_complete(attr(*a, **kw)))
        return attr

    @staticmethod
    async def _collect(items: Any) -> list[Any]:
        return [item async for item in items]

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, AsyncJob):
            return Blocking(value, self._loop)
        if isinstance(value, (list, tuple)):
            return type(value)(self._wrap(v) for v in value)
        return value


@pytest.fixture(scope="module", params=["sync", "async"])
def ams(request: pytest.FixtureRequest, ams_server: LiveServer) -> Iterator[Any]:
    """The client under test with the full key: ``Client``, or ``AsyncClient`` behind ``Blocking``."""
    if request.param == "sync":
        with Client(ams_server.url, api_key=API_KEY) as client:
            yield client
        return
    loop = asyncio.new_event_loop()
    client = AsyncClient(ams_server.url, api_key=API_KEY)
    try:
        yield Blocking(client, loop)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


@pytest.fixture
def fresh() -> Callable[[str], str]:
    """Unique memory names, so that tests sharing the server never collide."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pictures(fashion_images: Any) -> np.ndarray:
    """60 Fashion-MNIST images as (60, 1, 28, 28) float32 numpy, values k/255 (PNG-exact)."""
    return fashion_images[:60].numpy()


@pytest.fixture(params=list(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def visitor(browser: Browser, size: str) -> Iterator[Page]:
    """A page at the size, as a phone (touch, mobile viewport) or a laptop; fails the test if
    the page raised a JavaScript error."""
    phone = size == "phone"
    context = browser.new_context(
        viewport=SIZES[size], device_scale_factor=2 if phone else 1, is_mobile=phone, has_touch=phone
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors
