"""POST /v1/demo (demo memories from bundled offline data) and the page's serving (/, /static)."""

from __future__ import annotations

import re
import time

import pytest
import torch
from service_helpers import decode_png, error_code, wait_job

import app.presets
from app.page import STATIC_DIR
from memory_core.captions import photo_caption_pairs
from memory_core.data import FASHION_MNIST_CLASSES, fashion_mnist


def test_presets_are_listed(client):
    presets = {p["name"]: p for p in client.get("/v1/demo").json()["presets"]}
    assert set(presets) == {"fashion", "photos", "europe", "nations"}
    assert presets["europe"]["kind"] == presets["nations"]["kind"] == "relational"
    assert presets["europe"]["shape"] == [] and presets["fashion"]["kind"] == "hopfield"
    assert presets["fashion"]["shape"] == [1, 28, 28] and presets["fashion"]["text"] is False
    assert presets["photos"]["shape"] == [3, 64, 64] and presets["photos"]["text"] is True
    assert presets["photos"]["max_count"] == 69


def test_fashion_preset_loads_the_real_images_as_a_job(client):
    r = client.post("/v1/demo", json={"preset": "fashion", "count": 120})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["memory"]["name"] == "demo-fashion" and started["memory"]["shape"] == [1, 28, 28]
    assert started["job"]["kind"] == "demo" and started["job"]["patterns"] == 120
    job = wait_job(client, started["job"]["id"])
    assert job["status"] == "succeeded", job
    assert job["epoch"] == job["epochs"] == 1 + 10  # reading the data, then 10 batches of 12
    assert job["progress"] == 1.0
    details = client.get("/v1/memories/demo-fashion").json()
    assert details["count"] == 120 and details["kind"] == "hopfield" and details["text"] is False

    images, labels = fashion_mnist("test", limit=120)
    page = client.get("/v1/memories/demo-fashion/patterns?limit=200").json()["patterns"]
    assert len(page) == 120
    for i in (0, 57, 119):  # ids name the class; the pixels are the data set's
        label = FASHION_MNIST_CLASSES[int(labels[i])]
        assert page[i]["metadata"] == {"label": label}
        assert page[i]["id"].endswith(f"-{i}") and page[i]["id"].split("-")[0] in label.lower()
        png = client.get(
            f"/v1/memories/demo-fashion/patterns/{page[i]['id']}", headers={"Accept": "image/png"}
        )
        assert torch.equal(decode_png(png.content), images[i])
    # Recall works on it like on any memory.
    cue = images[57].clone()
    cue[:, 14:] = 0
    r = client.post(
        "/v1/memories/demo-fashion/retrieve",
        json={"vector": cue.reshape(-1).tolist(), "mask": [True] * 392 + [False] * 392, "k": 1},
    )
    assert r.json()["matches"][0]["id"] == page[57]["id"]

    # The name is taken now.
    r = client.post("/v1/demo", json={"preset": "fashion"})
    assert r.status_code == 409 and error_code(r) == "memory_exists"


def test_photos_preset_is_a_text_memory_with_the_captions(client):
    r = client.post("/v1/demo", json={"preset": "photos", "name": "pics"})
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["job"]["id"])["status"] == "succeeded"
    details = client.get("/v1/memories/pics").json()
    assert details["text"] is True and details["shape"] == [3, 64, 64] and details["count"] == 69
    pairs = photo_caption_pairs(64)
    page = client.get("/v1/memories/pics/patterns?limit=100").json()["patterns"]
    assert [p["id"] for p in page] == pairs.ids
    assert [p["text"] for p in page] == pairs.captions
    assert [p["metadata"]["paraphrase"] for p in page] == pairs.paraphrases
    png = client.get("/v1/memories/pics/patterns/astronaut", headers={"Accept": "image/png"})
    assert torch.equal(decode_png(png.content), pairs.images[0])
    # Stored through the service's store path, so the captions are embedded: a reworded
    # caption finds its picture.
    r = client.post("/v1/memories/pics/lookup", json={"text": pairs.paraphrases[1], "k": 3})
    assert r.status_code == 200 and r.json()["patterns"][0]["id"] == pairs.ids[1], r.text


def test_loads_in_batches_no_larger_than_max_batch(make_client):
    c = make_client(max_batch=4)
    r = c.post("/v1/demo", json={"preset": "fashion", "name": "small", "count": 60})
    job = wait_job(c, r.json()["job"]["id"])
    assert job["status"] == "succeeded" and job["epochs"] == 1 + 15  # 60 / 4 batches, not 10 of 6
    assert c.get("/v1/memories/small").json()["count"] == 60


def test_bad_requests_create_nothing(client, monkeypatch, tmp_path):
    cases = [
        ({"preset": "nope"}, 422, "unknown_preset"),
        ({"preset": "photos", "count": 70}, 422, "count_too_large"),
        ({"preset": "fashion", "count": 0}, 422, "validation_error"),
        ({"preset": "fashion", "kind": "nope"}, 422, "unknown_kind"),
        ({"preset": "fashion", "config": {"beta": "high"}}, 422, "invalid_config"),
        ({"preset": "fashion", "name": "../x"}, 422, "validation_error"),
        ({"preset": "fashion", "extra": 1}, 422, "validation_error"),
        ({}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/demo", json=body)
        assert (r.status_code, error_code(r)) == (status, code), body
    r = client.post("/v1/demo", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and error_code(r) == "invalid_json"
    # Data missing on this machine: 501 naming what to install, before anything is created.
    monkeypatch.setattr(app.presets, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    r = client.post("/v1/demo", json={"preset": "fashion"})
    assert r.status_code == 501 and error_code(r) == "dataset_unavailable"
    assert "dataset-fashion-mnist" in r.json()["error"]["message"]
    assert client.get("/v1/memories").json()["memories"] == []


def test_a_cancelled_load_deletes_its_memory(make_client):
    c = make_client(max_batch=20)
    r = c.post("/v1/demo", json={"preset": "fashion", "name": "big", "count": 10_000})  # 500 batches
    job_id = r.json()["job"]["id"]
    assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
    job = wait_job(c, job_id)
    assert job["status"] == "cancelled"
    deadline = time.monotonic() + 10  # on_finish runs just after the job is marked done
    while c.get("/v1/memories/big").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.02)
    r = c.get("/v1/memories/big")
    assert r.status_code == 404 and error_code(r) == "memory_not_found"
    # The name is free again.
    r = c.post("/v1/demo", json={"preset": "fashion", "name": "big", "count": 5})
    assert wait_job(c, r.json()["job"]["id"])["status"] == "succeeded"


def test_demo_needs_the_write_key(make_client):
    full, read = "full-key-0123456789", "read-key-9876543210"
    c = make_client(api_key=full, read_api_key=read)
    assert error_code(c.post("/v1/demo", json={"preset": "fashion"})) == "unauthorized"
    r = c.post("/v1/demo", json={"preset": "fashion"}, headers={"Authorization": f"Bearer {read}"})
    assert r.status_code == 403 and error_code(r) == "forbidden"
    assert c.get("/v1/demo").status_code == 401
    assert c.get("/v1/demo", headers={"X-API-Key": read}).status_code == 200
    r = c.post("/v1/demo", json={"preset": "fashion", "count": 3}, headers={"X-API-Key": full})
    assert r.status_code == 202
    # The page itself is open (it holds no data, and asks for a key).
    assert c.get("/").status_code == 200


STATIC_PATHS = sorted(
    f"/static/{p.relative_to(STATIC_DIR).as_posix()}" for p in STATIC_DIR.rglob("*") if p.is_file()
)


@pytest.mark.parametrize("path", ["/", *STATIC_PATHS])
def test_page_is_served_by_the_package(client, path):
    """The page and each of its files, every ES module included, revalidated on each load
    (no-cache, ETag): a browser never mixes modules of two versions."""
    r = client.get(path)
    assert r.status_code == 200 and r.content
    assert r.headers["cache-control"] == "no-cache"
    if path == "/":
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        return
    assert client.get(path, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    if path.endswith(".js"):  # a module script needs a JavaScript MIME type
        assert r.headers["content-type"].startswith("text/javascript")


def test_page_needs_nothing_from_the_network():
    files = [p for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "demo.js", "demo.css"}
    for p in files:
        text = p.read_text(encoding="utf-8")
        # No absolute URL to another host (the page talks to the origin it came from).
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), p.name
        assert "@import" not in text, p.name
