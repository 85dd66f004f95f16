"""The demo page in a real browser: Debian's chromium driven by playwright, against a real
uvicorn process (temp data directory, free port, nothing from the network).

Pictures are read back from the page's canvases and compared with what the service
stores (MSE on [0, 1] pixels), so "the page shows the stored original" is checked pixel
by pixel, not trusted from the page's own numbers.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import Page, expect
from service_helpers import decode_png, png

from memory_core.captions import photo_caption_pairs

TIMEOUT_MS = 30_000
STORED = 200  # Fashion-MNIST images in the memory "fashion": f0 .. f199


@pytest.fixture(scope="session")
def browser_context_args() -> dict:
    return {"viewport": {"width": 1400, "height": 1000}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(root: Path, **env: str) -> Iterator[str]:
    """A uvicorn process serving the app with data under ``root``; yields its base URL."""
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
    environ.update(AMS_DATA_DIR=str(root / "data"), AMS_DEVICE="cpu", **env)
    argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning"]
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory, fashion) -> Iterator[str]:
    """The service, with a memory "fashion" of STORED images f0, f1, ...; its base URL."""
    with _serve(tmp_path_factory.mktemp("demo-page")) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/memories", json={"name": "fashion", "kind": "hopfield", "shape": [1, 28, 28]})
            assert r.status_code == 201, r.text
            files = [("images", (f"f{i}.png", png(fashion[i]), "image/png")) for i in range(STORED)]
            ids = {"ids": [f"f{i}" for i in range(STORED)]}
            assert c.post("/v1/memories/fashion/patterns", files=files, data=ids).status_code == 201
        yield url


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def _open(page: Page, server: str, memory: str | None = "fashion") -> None:
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert not errors, errors
    if memory:
        page.select_option("#memory-select", memory)
        expect(page.locator("#memory-details")).to_contain_text("patterns")
        expect(page.locator("#pattern-select option")).not_to_have_count(1)  # the ids are listed


def _canvas(page: Page, canvas_id: str) -> np.ndarray:
    """A canvas's pixels as (H, W, 4) uint8 RGBA."""
    w, h, data = page.evaluate(
        """(id) => { const c = document.getElementById(id);
                     const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                     return [c.width, c.height, Array.from(d)]; }""",
        canvas_id,
    )
    return np.asarray(data, dtype=np.uint8).reshape(h, w, 4)


def _grey(rgba: np.ndarray) -> torch.Tensor:
    """(H, W, 4) grey RGBA -> (1, H, W) in [0, 1]."""
    assert np.array_equal(rgba[..., 0], rgba[..., 1]) and np.array_equal(rgba[..., 0], rgba[..., 2])
    return torch.from_numpy(rgba[..., 0].astype(np.float32) / 255.0)[None]


def _stored(api: httpx.Client, memory: str, pid: str) -> torch.Tensor:
    r = api.get(f"/v1/memories/{memory}/patterns/{pid}", headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    return decode_png(r.content)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


def _hidden(page: Page) -> int:
    return int(page.locator("#mask-info").get_attribute("data-hidden"))


def _pick(page: Page, pid: str) -> None:
    page.select_option("#pattern-select", pid)
    expect(page.locator("#picture-info")).to_have_attribute("data-pattern", pid)


def _recall(page: Page, button: str) -> None:
    page.click(button)
    expect(page.locator("#result-panel")).to_have_attribute("data-state", "done")


def test_upload_store_paint_and_complete_shows_the_stored_original(page, server, api, fashion):
    _open(page, server)
    # A picture the memory does not hold yet: the service checks it and names its nearest.
    upload = fashion[250]
    page.set_input_files(
        "#upload", files=[{"name": "mine.png", "mimeType": "image/png", "buffer": png(upload)}]
    )
    expect(page.locator("#picture-info")).to_contain_text("Upload mine.png (28×28")  # noqa: RUF001 (the page writes a times sign)
    expect(page.locator("#picture-info")).to_contain_text("The memory recalls it as f")
    expect(page.locator("#intro")).to_have_text("Paint over the picture or pick a mask, then press Complete.")
    assert _mse(_grey(_canvas(page, "original")), upload) == 0.0  # shown as uploaded
    # Store it from the page.
    page.fill("#store-id", "mine")
    page.click("#store")
    expect(page.locator("#picture-info")).to_contain_text("Stored as mine.")
    assert api.get("/v1/memories/fashion").json()["count"] == STORED + 1
    stored = _stored(api, "fashion", "mine")
    assert torch.equal(stored, upload)

    # Paint a horizontal stroke across the lower part with the mouse (brush 6 px).
    page.fill("#brush", "6")
    box = page.locator("#editor").bounding_box()
    y = box["y"] + box["height"] * 0.6  # row 16.8 of 28
    page.mouse.move(box["x"] + box["width"] * 0.05, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, y, steps=12)
    page.mouse.up()
    hidden = _hidden(page)
    cue = _canvas(page, "cue")
    unknown = cue[..., 3] == 0  # the cue the service gets: alpha 0 = to fill
    assert int(unknown.sum()) == hidden and 100 <= hidden <= 28 * 7
    rows = np.nonzero(unknown.any(axis=1))[0]
    assert rows.min() >= 13 and rows.max() <= 20, rows  # where the stroke went, and only there
    assert unknown[16, 2:26].all()
    assert float(upload[0][torch.from_numpy(unknown)].sum()) > 10  # the stroke hides real content

    _recall(page, "#complete")
    expect(page.locator("#result-summary")).to_contain_text(f"{hidden} pixels filled")
    assert page.locator("#result-summary .best-id").inner_text() == "mine"
    shown = _grey(_canvas(page, "result"))
    assert _mse(shown, stored) < 1e-6  # the completion on the page is the stored original
    assert float(page.locator("#result-summary").get_attribute("data-mse")) < 1e-6
    assert _mse(_grey(_canvas(page, "original")), stored) == 0.0


def _expected_mask(mask: str) -> torch.Tensor | None:
    """(28, 28) True = to fill, for the preset masks with a fixed place."""
    out = torch.zeros(28, 28, dtype=torch.bool)
    if mask == "bottom":
        out[14:] = True
    elif mask == "box":  # the centre half
        out[7:21, 7:21] = True
    else:
        return None
    return out


@pytest.mark.parametrize(("mask", "pid"), [("bottom", "f42"), ("box", "f7"), ("random", "f123")])
def test_preset_masks_and_completion(page, server, api, mask, pid):
    _open(page, server)
    _pick(page, pid)
    page.click(f"[data-mask={mask}]")
    unknown = torch.from_numpy(_canvas(page, "cue")[..., 3] == 0)
    expected = _expected_mask(mask)
    if expected is None:  # exactly 75% of the pixels, scattered
        assert int(unknown.sum()) == 588 and _hidden(page) == 588
        assert unknown[:14].sum() > 200 and unknown[14:].sum() > 200
    else:
        assert torch.equal(unknown, expected) and _hidden(page) == int(expected.sum())
    _recall(page, "#complete")
    expect(page.locator("#result-summary")).to_contain_text(f"{int(unknown.sum())} pixels filled")
    assert page.locator("#result-summary .best-id").inner_text() == pid
    assert _mse(_grey(_canvas(page, "result")), _stored(api, "fashion", pid)) < 1e-3  # DESIGN.md: partial cue


def test_noisy_cue_retrieve(page, server, api):
    _open(page, server)
    _pick(page, "f17")
    original = _stored(api, "fashion", "f17")
    page.fill("#noise", "0.2")
    cue = _grey(_canvas(page, "cue"))
    assert 0.01 < _mse(cue, original) < 0.05  # sigma 0.2, clipped to [0, 1]
    _recall(page, "#retrieve")
    expect(page.locator("#result-title")).to_have_text("Retrieved")
    assert page.locator("#result-summary .best-id").inner_text() == "f17"
    assert _mse(_grey(_canvas(page, "result")), original) < 0.005  # DESIGN.md: noisy cue
    # Scores within float32 rounding of 0 (an exact stored pattern) read as 0; others as they are.
    shown = page.evaluate(
        "import('/static/demo.js').then((m) => [-2.72e-10, 6.9e-15, -2.67e-4, -5.834].map(m.fmtScore))"
    )
    assert shown == ["0", "0", "-2.67e-4", "-5.834"]
    # Noise and a painted mask together: retrieve still finds it.
    page.click("[data-mask=bottom]")
    _recall(page, "#retrieve")
    assert page.locator("#result-summary .best-id").inner_text() == "f17"


def _error(page: Page) -> str:
    banner = page.locator("#error")
    expect(banner).to_be_visible()
    return banner.inner_text()


def test_errors_are_shown_readably(page, server, api, fashion):
    _open(page, server)
    # Not a picture: the service's 422 invalid_image, in words.
    page.set_input_files(
        "#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
    )
    text = _error(page)
    assert "Not a picture the service can read." in text and "invalid_image · HTTP 422" in text
    assert "Upload notes.txt" not in page.locator("#picture-info").inner_text()  # the sample stays
    page.click("#error-close")
    expect(page.locator("#error")).to_be_hidden()
    # Too many pixels (a 4200 x 4000 PNG of one colour: small file, over the 16 M pixel limit).
    buf = io.BytesIO()
    Image.new("L", (4200, 4000), 128).save(buf, format="PNG")
    page.set_input_files(
        "#upload", files=[{"name": "huge.png", "mimeType": "image/png", "buffer": buf.getvalue()}]
    )
    text = _error(page)
    assert "Picture too large." in text and "image_too_large · HTTP 413" in text
    # The memory deleted behind the page's back.
    r = api.post("/v1/memories", json={"name": "doomed", "kind": "hopfield", "shape": [1, 28, 28]})
    assert r.status_code == 201
    api.post("/v1/memories/doomed/patterns", files=[("images", ("a.png", png(fashion[0]), "image/png"))])
    page.click("#memory-refresh")
    page.select_option("#memory-select", "doomed")
    expect(page.locator("#pattern-select option")).to_have_count(2)
    page.select_option("#pattern-select", index=1)
    expect(page.locator("#picture-info")).to_contain_text("Stored pattern")
    page.click("[data-mask=box]")
    assert api.delete("/v1/memories/doomed").status_code == 204
    page.click("#complete")
    expect(page.locator("#result-panel")).to_have_attribute("data-state", "error")
    text = _error(page)
    assert "Memory missing." in text and "no memory named 'doomed'" in text
    assert "memory_not_found · HTTP 404" in text
    expect(page.locator("#memory-select option[value=doomed]")).to_have_count(0)  # the list is reloaded


def test_demo_button_loads_a_memory_with_progress(page, server, api):
    _open(page, server, memory=None)
    page.select_option("#preset-select", "fashion")
    page.click("#demo-load")
    expect(page.locator("#memory-select")).to_have_value("demo-fashion", timeout=90_000)
    expect(page.locator("#demo-status")).to_have_text("demo-fashion: 500 patterns loaded.")
    assert page.locator("#demo-bar").evaluate("(el) => el.value") == 1
    row = page.locator("#jobs li.job", has_text="demo-fashion")
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row).to_contain_text("100%")
    expect(row.locator(".job-reason")).to_have_text("Finished: 500 patterns loaded.")
    assert api.get("/v1/memories/demo-fashion").json()["count"] == 500
    # The memory is ready to use: a stored picture completes to itself.
    pid = api.get("/v1/memories/demo-fashion/patterns?limit=5").json()["patterns"][3]["id"]
    _pick(page, pid)
    page.click("[data-mask=bottom]")
    _recall(page, "#complete")
    assert page.locator("#result-summary .best-id").inner_text() == pid
    assert _mse(_grey(_canvas(page, "result")), _stored(api, "demo-fashion", pid)) < 1e-3
    # A second click picks the memory that exists rather than failing.
    page.click("#demo-load")
    expect(page.locator("#demo-status")).to_have_text("demo-fashion exists already: picked it.")
    expect(page.locator("#error")).to_be_hidden()


def test_caption_lookup_text_box(page, server, api):
    _open(page, server, memory=None)
    expect(page.locator("#lookup-panel")).to_be_hidden()  # only for text memories
    page.select_option("#preset-select", "photos")
    page.click("#demo-load")
    expect(page.locator("#memory-select")).to_have_value("demo-photos", timeout=90_000)
    expect(page.locator("#lookup-panel")).to_be_visible()
    pairs = photo_caption_pairs(64)
    i = pairs.ids.index("astronaut-face")
    page.fill("#lookup-text", pairs.paraphrases[i])  # in other words than the stored caption
    page.fill("#lookup-k", "3")
    page.click("#lookup-form button")
    expect(page.locator("#lookup-panel")).to_have_attribute("data-state", "done", timeout=30_000)
    cards = page.locator("#lookup-results figure[data-id]")
    expect(cards).to_have_count(3)
    expect(page.locator("#lookup-results")).to_have_attribute("data-best", "astronaut-face")
    expect(cards.first).to_contain_text(pairs.captions[i])
    # The first card's picture is the stored one.
    shown = cards.first.locator("img").evaluate(
        """(img) => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
                      c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0);
                      return Array.from(x.getImageData(0, 0, c.width, c.height).data); }"""
    )
    rgb = np.asarray(shown, dtype=np.uint8).reshape(64, 64, 4)[..., :3].transpose(2, 0, 1)
    assert _mse(torch.from_numpy(rgb.astype(np.float32) / 255.0), pairs.images[i]) == 0.0
    # Clicking it makes it the picture; "Caption it" reads its caption back from the memory.
    cards.first.click()
    expect(page.locator("#picture-info")).to_have_attribute("data-pattern", "astronaut-face")
    page.click("#caption")
    expect(page.locator("#result-panel")).to_have_attribute("data-state", "done")
    expect(page.locator("#captions li").first).to_contain_text(pairs.captions[i])


def test_api_key_is_asked_for_and_used(page, tmp_path, fashion):
    key = "page-key-0123456789"
    with _serve(tmp_path, AMS_API_KEY=key) as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}) as c:
            c.post("/v1/memories", json={"name": "locked", "kind": "hopfield", "shape": [1, 28, 28]})
            c.post(
                "/v1/memories/locked/patterns", files=[("images", ("a.png", png(fashion[5]), "image/png"))]
            )
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/")  # the page itself is open
        text = _error(page)
        assert "API key needed." in text and "unauthorized · HTTP 401" in text
        expect(page.locator("#key-form")).to_be_visible()
        page.fill("#api-key", key)
        page.click("#key-form button")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#service-info")).to_contain_text("API key on")
        expect(page.locator("#error")).to_be_hidden()
        page.select_option("#memory-select", "locked")
        expect(page.locator("#pattern-select option")).to_have_count(2)
        page.select_option("#pattern-select", index=1)
        page.click("[data-mask=bottom]")
        _recall(page, "#complete")
        assert _mse(_grey(_canvas(page, "result")), fashion[5]) < 1e-6


def test_jobs_table_follows_a_running_job_and_cancels_it(page, tmp_path):
    # Small batches make a 10 000-image load take long enough to watch (about 1000 steps).
    with _serve(tmp_path, AMS_MAX_BATCH="10") as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/demo", json={"preset": "fashion", "name": "big", "count": 10_000})
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/")
        row = page.locator(f"#jobs li[data-job='{job_id}']")
        expect(row).to_have_attribute("data-status", "running")
        bar = row.locator("progress")
        deadline = time.monotonic() + 30
        while bar.evaluate("(el) => el.value") == 0:  # the page polls while a job runs
            assert time.monotonic() < deadline, "no progress shown"
            time.sleep(0.1)
        assert 0 < bar.evaluate("(el) => el.value") < 1
        expect(row.locator(".job-eta")).to_contain_text(" left")  # an ETA
        expect(row).to_contain_text("demo")
        row.locator("button", has_text="Cancel").click()
        expect(row).to_have_attribute("data-status", "cancelled")
        expect(row.locator(".job-reason")).to_contain_text("Cancelled at step")
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        deadline = time.monotonic() + 10  # the half-loaded memory is deleted
        while c.get("/v1/memories/big").status_code != 404:
            assert time.monotonic() < deadline, "cancelled load left its memory"
            time.sleep(0.05)


def test_training_a_pc_memory_shows_progress_energy_and_then_recalls(page, server, api, fashion):
    """Train a small PC memory from the page: the jobs table follows the job (progress,
    epoch, energy, ETA from /v1/jobs/{id}), the memory turns ready, and Complete recalls."""
    config = {"sizes": [64, 256, 784], "epochs": 150, "stop_energy": 0.0}
    assert (
        api.post(
            "/v1/memories", json={"name": "pcmem", "kind": "pc", "shape": [1, 28, 28], "config": config}
        ).status_code
        == 201
    )
    files = [("images", (f"p{i}.png", png(fashion[i]), "image/png")) for i in range(12)]
    assert (
        api.post(
            "/v1/memories/pcmem/patterns", files=files, data={"ids": [f"p{i}" for i in range(12)]}
        ).status_code
        == 201
    )
    _open(page, server, memory="pcmem")
    expect(page.locator("#memory-details")).to_contain_text("untrained")
    expect(page.locator("#train-row")).to_be_visible()
    expect(page.locator("#model-hint")).to_contain_text("press Train")  # beside Complete
    page.click("#train")
    expect(page.locator("#train-row")).to_be_hidden()  # no second Train beside the running job
    row = page.locator("#jobs li.job", has_text="pcmem")
    expect(row).to_have_attribute("data-status", "running")
    bar = row.locator("progress")
    deadline = time.monotonic() + 60
    while bar.evaluate("(el) => el.value") == 0:  # the page polls the job while it runs
        assert time.monotonic() < deadline, "no training progress shown"
        time.sleep(0.1)
    expect(row.locator(".job-energy")).to_contain_text("energy ")  # the energy of the last epoch
    float(row.locator(".job-energy").inner_text().removeprefix("energy "))
    expect(row).to_have_attribute("data-status", "succeeded", timeout=180_000)
    expect(row.locator(".job-reason")).to_have_text("Finished: trained all 150 epochs.")
    expect(page.locator("#memory-details")).to_contain_text("ready", timeout=10_000)
    expect(page.locator("#model-hint")).to_be_hidden()
    _pick(page, "p5")
    page.click("button[data-mask=bottom]")
    _recall(page, "#complete")
    assert page.locator("#result-summary .best-id").inner_text() == "p5"
    # the pc memory's own report: the network's reconstruction of a stored pattern
    expect(page.locator("#result-summary")).to_have_attribute("data-answer", "stored")
    expect(page.locator("#verdict-answer")).to_contain_text("reconstruction of the stored pattern p5")
