"""The demo page as a visitor meets it, on a phone (390 x 844) and a laptop (1280 x 800):
Debian's chromium (playwright) against a real server process.

Each state is saved as a screenshot under artifacts/screenshots/ (git-ignored) for people to
look at; the assertions are what the issue asks of the page: a memory and a sample picture
ready on landing with the picture editor on the first screen, no horizontal overflow with any
preset memory (long names included), a cue that is not stored never reading as an exact
match, switching memory resetting what belonged to the previous one, and jobs saying why
they stopped with Cancel reachable.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import LiveServer
from playwright.sync_api import Page, expect
from screens import SIZES, no_overflow, shot
from service_helpers import png, wait_job

LONG_ID = "a-pattern-whose-name-goes-on-" + "and-on-" * 13 + "x"  # 128 characters, no spaces
LONG_NAME = "long-names-" + "x" * 53  # 64 characters, the longest memory name
assert len(LONG_ID) <= 128


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    """An empty service: the first visit creates the Fashion-MNIST demo memory by itself."""
    live = LiveServer(tmp_path_factory.mktemp("demo-layout") / "data")
    try:
        yield live
    finally:
        live.stop()


def _land(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=120_000)
    expect(page.locator("#mask-info")).to_have_attribute("data-hidden", "392")


def _in_first_screen(page: Page, selector: str, size: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None and box["y"] >= 0
    assert box["y"] + box["height"] <= SIZES[size]["height"], (selector, box)


def test_landing_has_a_memory_and_a_sample_ready(visitor: Page, server: LiveServer, size: str) -> None:
    _land(visitor, server)
    expect(visitor.locator("#memory-select")).to_have_value("demo-fashion")
    expect(visitor.locator("#picture-info")).to_have_attribute("data-pattern", "ankle-boot-0")
    expect(visitor.locator("#intro")).to_contain_text("Press Complete")
    for selector in ("#editor", "#complete"):  # the editor and the one obvious action, unscrolled
        _in_first_screen(visitor, selector, size)
    no_overflow(visitor, size)
    shot(visitor, size, "1-landing")
    visitor.click("#complete")
    expect(visitor.locator("#result-panel")).to_have_attribute("data-state", "done")
    summary = visitor.locator("#result-summary")
    expect(summary).to_have_attribute("data-cue", "stored")
    expect(summary).to_have_attribute("data-answer", "stored")
    expect(visitor.locator("#verdict-answer")).to_have_text("The answer is the stored pattern ankle-boot-0.")
    expect(visitor.locator("#matches li")).to_have_count(5)
    no_overflow(visitor, size)
    shot(visitor, size, "2-completed")


def test_a_cue_that_is_not_stored_never_reads_as_an_exact_match(
    visitor: Page, server: LiveServer, size: str, fashion
) -> None:
    _land(visitor, server)
    # A training image: the demo memory holds test images only.
    visitor.set_input_files(
        "#upload", files=[{"name": "mine.png", "mimeType": "image/png", "buffer": png(fashion[3])}]
    )
    expect(visitor.locator("#picture-info")).to_contain_text("Upload mine.png")
    visitor.click("[data-mask=bottom]")
    visitor.click("#complete")
    expect(visitor.locator("#result-panel")).to_have_attribute("data-state", "done")
    summary = visitor.locator("#result-summary")
    expect(summary).to_have_attribute("data-cue", "new")
    assert float(summary.get_attribute("data-cue-mse")) > 1e-4
    expect(visitor.locator("#verdict-cue")).to_contain_text("Your cue is not a stored pattern: the nearest, ")
    expect(visitor.locator("#verdict-cue")).to_contain_text("differs by MSE")
    no_overflow(visitor, size)
    shot(visitor, size, "3-new-cue")
    # Noise on a stored picture: not a stored cue either, and the answer is still the stored one.
    visitor.select_option("#pattern-select", "ankle-boot-0")
    expect(visitor.locator("#picture-info")).to_have_attribute("data-pattern", "ankle-boot-0")
    visitor.fill("#noise", "0.2")
    visitor.click("#retrieve")
    expect(visitor.locator("#result-panel")).to_have_attribute("data-state", "done")
    expect(summary).to_have_attribute("data-cue", "new")
    expect(summary).to_have_attribute("data-answer", "stored")
    expect(summary.locator(".best-id")).to_have_text("ankle-boot-0")


def test_every_preset_memory_fits_and_switching_resets(visitor: Page, server: LiveServer, size: str) -> None:
    with server.client() as api:
        if api.get("/v1/memories/demo-photos").status_code == 404:
            job = api.post("/v1/demo", json={"preset": "photos"}).json()["job"]
            assert wait_job(api, job["id"])["status"] == "succeeded"
        if api.get(f"/v1/memories/{LONG_NAME}").status_code == 404:
            body = {"name": LONG_NAME, "kind": "hopfield", "shape": [3, 64, 64], "text": True}
            assert api.post("/v1/memories", json=body).status_code == 201
            photo = api.get(
                "/v1/memories/demo-photos/patterns/astronaut-face", headers={"Accept": "image/png"}
            )
            files = [("images", ("p.png", photo.content, "image/png"))]
            data = {"ids": LONG_ID, "texts": "a caption that goes on " * 20}
            r = api.post(f"/v1/memories/{LONG_NAME}/patterns", files=files, data=data)
            assert r.status_code == 201, r.text
    _land(visitor, server)
    visitor.fill("#noise", "0.3")
    visitor.click("#complete")
    expect(visitor.locator("#result-panel")).to_have_attribute("data-state", "done")
    for memory in ("demo-photos", LONG_NAME, "demo-fashion"):
        visitor.select_option("#memory-select", memory)
        # What belonged to the previous memory is gone: result, captions, noise, lookups;
        # the new memory's first picture is ready with its own mask count.
        expect(visitor.locator("#result-panel")).to_have_attribute("data-state", "idle")
        expect(visitor.locator("#matches li")).to_have_count(0)
        expect(visitor.locator("#captions li")).to_have_count(0)
        expect(visitor.locator("#lookup-results figure")).to_have_count(0)
        expect(visitor.locator("#noise")).to_have_value("0")
        hidden = 392 if memory == "demo-fashion" else 64 * 32
        expect(visitor.locator("#mask-info")).to_have_attribute("data-hidden", str(hidden))
        no_overflow(visitor, size)
        if memory != "demo-fashion":
            visitor.click("#complete")
            expect(visitor.locator("#result-panel")).to_have_attribute("data-state", "done")
            visitor.click("#caption")
            expect(visitor.locator("#captions li").first).to_be_visible()
            visitor.fill("#lookup-text", "an astronaut's face")
            visitor.click("#lookup-form button")
            expect(visitor.locator("#lookup-results figure").first).to_be_visible()
            no_overflow(visitor, size)
            shot(visitor, size, f"4-{memory[:10]}")


def test_jobs_say_why_they_stopped_and_cancel_is_reachable(
    visitor: Page, server: LiveServer, size: str, fashion
) -> None:
    name = f"pc-{size}"
    with server.client() as api:
        config = {"sizes": [16, 32, 784], "epochs": 4, "stop_energy": 0.0}
        r = api.post(
            "/v1/memories", json={"name": name, "kind": "pc", "shape": [1, 28, 28], "config": config}
        )
        assert r.status_code == 201, r.text
        files = [("images", (f"p{i}.png", png(fashion[i]), "image/png")) for i in range(8)]
        assert api.post(f"/v1/memories/{name}/patterns", files=files).status_code == 201
    _land(visitor, server)
    visitor.select_option("#memory-select", name)
    expect(visitor.locator("#train-row")).to_be_visible()
    visitor.click("#train")
    job = visitor.locator("#jobs li.job", has_text=name).first
    expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)
    expect(job.locator(".job-reason")).to_have_text("Finished: trained all 4 epochs.")
    # A long training, cancelled from the page: the button is on screen once scrolled to.
    with server.client() as api:
        api.post(f"/v1/memories/{name}/patterns", files=[("images", ("x.png", png(fashion[9]), "image/png"))])
    visitor.click("#memory-refresh")
    expect(visitor.locator("#memory-details")).to_contain_text("stale")
    visitor.fill("#train-epochs", "100000")
    visitor.click("#train")
    running = visitor.locator("#jobs li.job[data-status=running]", has_text=name)
    expect(running.locator(".job-epoch")).not_to_have_text("epoch 0/100000", timeout=60_000)
    cancel = running.locator("button.cancel")
    cancel.scroll_into_view_if_needed()
    box = cancel.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= SIZES[size]["width"]  # no sideways scrolling
    assert box["y"] >= 0 and box["y"] + box["height"] <= SIZES[size]["height"]
    no_overflow(visitor, size)
    shot(visitor, size, "5-training")
    cancel.click()
    cancelled = visitor.locator("#jobs li.job[data-status=cancelled]", has_text=name)
    expect(cancelled.locator(".job-reason")).to_contain_text("Cancelled at epoch ")
    shot(visitor, size, "6-cancelled")
