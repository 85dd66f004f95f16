"""The demo page's knowledge-base panel on a phone (390 x 844) and a laptop (1280 x 800):
Debian's chromium (playwright) against a real server process.

A visitor loads the bundled European knowledge base with one button (its facts, then a
training job whose progress the panel shows), asks which countries border Germany, and
sees the ranking, stored facts marked; a question without a "?" gets the API's error in
words; nothing is wider than the screen. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import LiveServer
from playwright.sync_api import Page, expect
from screens import no_overflow, shot

from memory_core.boxe.datasets import europe_kb

NEIGHBOURS = {e for r, args in europe_kb().facts if r == "borders" and "germany" in args for e in args} - {
    "germany"
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    """A service holding one memory (so that the page does not make its picture demo memory)."""
    live = LiveServer(tmp_path_factory.mktemp("demo-kb") / "data", AMS_TORCH_THREADS="1")
    with live.client() as api:
        body = {"name": "vectors", "kind": "hopfield", "shape": [4]}
        assert api.post("/v1/memories", json=body).status_code == 201
    try:
        yield live
    finally:
        live.stop()


def test_a_visitor_loads_a_knowledge_base_and_asks_it(visitor: Page, server: LiveServer, size: str) -> None:
    visitor.goto(f"{server.url}/")
    expect(visitor.locator("body")).to_have_attribute("data-ready", "true", timeout=120_000)
    panel = visitor.locator("#kb-panel")
    expect(panel.locator("#kb-preset")).to_have_value("europe")
    no_overflow(visitor, size)
    # Load and train (the second visitor finds it made and trained already, and picks it).
    panel.locator("#kb-load").scroll_into_view_if_needed()
    panel.locator("#kb-load").click()
    expect(panel.locator("#kb-details")).to_have_text("176 facts, trained on all of them.", timeout=120_000)
    expect(panel.locator("#kb-select")).to_have_value("demo-europe")
    if size == "phone":  # the first visitor saw the training job's progress
        expect(panel.locator("#kb-status")).to_contain_text("trained 100 epochs on 176 facts")
    expect(panel.locator("#kb-relation")).to_have_value("borders")
    args = panel.locator("select.kb-arg")
    expect(args).to_have_count(2)
    args.nth(0).select_option("germany")
    panel.locator("#kb-form button[type=submit]").click()
    expect(panel.locator("#kb-question")).to_have_text("borders(germany, ?)")
    ranking = panel.locator("#kb-results li")
    expect(ranking).to_have_count(10)
    top9 = {ranking.nth(i).get_attribute("data-entity") for i in range(9)}
    assert len(top9 & NEIGHBOURS) >= 8, top9
    stored = {li.get_attribute("data-entity") for li in ranking.filter(has_text="stored").all()}
    assert {"denmark", "poland", "czechia", "austria", "switzerland"} <= stored <= NEIGHBOURS
    no_overflow(visitor, size)
    shot(visitor, size, "kb-1-ranking")
    # Without the stored facts: none of the answers is marked stored.
    panel.locator("#kb-filter").check()
    panel.locator("#kb-form button[type=submit]").click()
    expect(ranking.first).not_to_have_attribute("data-entity", "denmark")
    expect(ranking.filter(has_text="stored")).to_have_count(0)
    # A question with no "?": the API's answer, in words.
    args.nth(1).select_option("france")
    panel.locator("#kb-form button[type=submit]").click()
    expect(visitor.locator("#error")).to_be_visible()
    expect(visitor.locator("#error-title")).to_have_text("Ask for exactly one argument.")
    expect(visitor.locator("#error-code")).to_have_text("invalid_query · HTTP 422")
    no_overflow(visitor, size)
    shot(visitor, size, "kb-2-error")


def test_an_untrained_knowledge_base_is_trained_before_it_is_asked(
    visitor: Page, server: LiveServer, size: str
) -> None:
    """Ask is offered only once a model exists (the service would answer 409 not_trained), and
    Train is not offered while the page follows a training job: before, a visitor pressing Ask
    during the preset's training read "press Train" beside a running job."""
    name = f"kb-raw-{size}"
    with server.client() as api:
        body = {"name": name, "kind": "relational", "config": {"epochs": 100_000}}  # a job that lasts
        assert api.post("/v1/memories", json=body).status_code == 201
        facts = [{"relation": "borders", "args": pair} for pair in (["spain", "france"], ["france", "italy"])]
        assert api.post(f"/v1/memories/{name}/facts", json={"facts": facts}).status_code == 201
    visitor.goto(f"{server.url}/")
    expect(visitor.locator("body")).to_have_attribute("data-ready", "true", timeout=120_000)
    # No picture memory is picked here (one vector memory): the picture tools say so.
    expect(visitor.locator("#pattern-select option").first).to_have_text("(no picture memory picked)")
    panel = visitor.locator("#kb-panel")
    panel.locator("#kb-select").select_option(name)
    details, ask, train = (
        panel.locator("#kb-details"),
        panel.locator("#kb-form button[type=submit]"),
        panel.locator("#kb-train"),
    )
    expect(details).to_have_text("2 facts, untrained, 0 trained: press Train, then ask.")
    expect(ask).to_be_disabled()
    train.click()
    expect(details).to_have_text("2 facts, untrained, 0 trained: ask once the training below is done.")
    expect(train).to_be_hidden()
    expect(ask).to_be_disabled()
    shot(visitor, size, "kb-3-training")
    with server.client() as api:  # cancelled: still no model, so Train comes back
        job = next(j for j in api.get("/v1/jobs").json()["jobs"] if j["memory"] == name)
        assert api.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202, 204)
    expect(panel.locator("#kb-status")).to_have_text("training cancelled.")
    expect(details).to_have_text("2 facts, untrained, 0 trained: press Train, then ask.")
    expect(train).to_be_visible()
    with server.client() as api:
        assert api.delete(f"/v1/memories/{name}").status_code == 204


def test_a_training_knowledge_base_is_busy_in_its_own_panel(
    visitor: Page, server: LiveServer, size: str
) -> None:
    """While a knowledge base trains, its panel says so and panel 1 says nothing: before, the
    page had one busy label, and "Training…" stood beside panel 1's Complete button."""
    name = f"kb-busy-{size}"
    with server.client() as api:
        body = {"name": name, "kind": "relational", "config": {"epochs": 100_000}}  # a job that lasts
        assert api.post("/v1/memories", json=body).status_code == 201
        facts = [{"relation": "borders", "args": ["spain", "france"]}]
        assert api.post(f"/v1/memories/{name}/facts", json={"facts": facts}).status_code == 201
    visitor.goto(f"{server.url}/")
    expect(visitor.locator("body")).to_have_attribute("data-ready", "true", timeout=120_000)
    panel = visitor.locator("#kb-panel")
    panel.locator("#kb-select").select_option(name)
    panel.locator("#kb-train").click()
    expect(panel.locator("#kb-status")).to_contain_text("training: epoch")
    expect(visitor.locator("#busy")).to_have_text("")  # panel 1's label, beside Complete
    expect(visitor.locator("#memory-panel .busy")).to_have_text("")
    expect(panel.locator(".busy")).to_have_text("Training…")
    no_overflow(visitor, size)
    shot(visitor, size, "kb-4-busy")
    with server.client() as api:
        job = next(j for j in api.get("/v1/jobs").json()["jobs"] if j["memory"] == name)
        assert api.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202, 204)
    expect(panel.locator("#kb-status")).to_have_text("training cancelled.")
    expect(panel.locator(".busy")).to_have_text("")
    with server.client() as api:
        assert api.delete(f"/v1/memories/{name}").status_code == 204
