"""The interactive API reference pages, /docs (Swagger UI) and /redoc, in Debian's chromium
against a real server, with every request that leaves the server refused: they must render
from the service's own assets (no CDN) and list every operation of /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from live_server import LiveServer
from playwright.sync_api import Browser, Page, Route, expect

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("api-docs") / "data")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def offline_page(browser: Browser, server: LiveServer) -> Iterator[tuple[Page, list[str]]]:
    """A page that may reach only the server: any other request is aborted, and recorded unless
    it is an image (ReDoc's "API docs by Redocly" footer links its logo from cdn.redoc.ly; the
    page works without it)."""
    own = urlsplit(server.url).netloc
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    refused: list[str] = []

    def only_the_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own or route.request.url.startswith("data:"):
            route.continue_()
        else:
            if route.request.resource_type != "image":
                refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, refused
    context.close()
    assert not errors, errors


def _operations(server: LiveServer) -> list[tuple[str, str, str]]:
    """(method, path, summary) of every operation the service publishes."""
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return [
        (method, path, op.get("summary", ""))
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method in HTTP_METHODS
    ]


def test_swagger_ui_lists_every_operation_offline(offline_page, server: LiveServer) -> None:
    page, refused = offline_page
    operations = _operations(server)
    assert len(operations) >= 25
    page.goto(f"{server.url}/docs")
    blocks = page.locator(".opblock-summary-path")
    expect(blocks.first).to_be_visible()
    expect(blocks).to_have_count(len(operations))
    shown = {
        (m.lower(), p)
        for m, p in zip(
            page.locator(".opblock-summary-method").all_inner_texts(),
            page.locator(".opblock-summary-path").evaluate_all(
                "els => els.map(e => e.getAttribute('data-path'))"
            ),
            strict=True,
        )
    }
    assert shown == {(m, p) for m, p, _ in operations}
    assert not refused, f"/docs asked for outside resources: {refused}"


def test_redoc_lists_every_operation_offline(offline_page, server: LiveServer) -> None:
    page, refused = offline_page
    operations = _operations(server)
    page.goto(f"{server.url}/redoc")
    expect(page.locator("h1").first).to_contain_text("Associative memory service")
    menu = page.locator("li[role=menuitem][data-item-id*='/operation/']")
    expect(menu).to_have_count(len(operations))
    labels = menu.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    assert sorted(labels) == sorted(summary for _, _, summary in operations)
    assert not refused, f"/redoc asked for outside scripts, styles or data: {refused}"
