"""Cross-modal lookup over HTTP: captioned photos stored in a text memory, found both ways."""

from __future__ import annotations

import base64

import pytest
import torch
from service_helpers import decode_png, error_code, mask_png, png, png_b64, rgba_png, wait_job

from memory_core.captions import photo_caption_pairs
from memory_core.masks import bottom_half_unknown

N = 24  # stored pairs: enough to be a real test, quick to embed


@pytest.fixture(scope="module")
def pairs():
    return photo_caption_pairs(64)


@pytest.fixture
def text_memory(client, pairs):
    created = client.post("/v1/memories", json={"name": "photos", "kind": "hopfield", "shape": [3, 64, 64],
                                                "text": True, "config": {}})
    assert created.status_code == 201 and created.json()["text"] is True
    stored = client.post("/v1/memories/photos/patterns", json={"patterns": [
        {"id": pairs.ids[i], "image": png_b64(pairs.images[i]), "text": pairs.captions[i]} for i in range(N)]})
    assert stored.status_code == 201, stored.json()
    return client


def test_paraphrased_caption_finds_the_photo(text_memory, pairs):
    hits = 0
    for i in range(N):
        r = text_memory.post("/v1/memories/photos/lookup", json={"text": pairs.paraphrases[i], "k": 3})
        assert r.status_code == 200, r.json()
        body = r.json()
        assert body["query"] == "text" and body["captions"] is None
        top = body["patterns"][0]
        assert len(body["patterns"]) == 3
        hits += top["id"] == pairs.ids[i]
        if top["id"] == pairs.ids[i]:
            # The match carries its caption and its stored picture; the completion is that picture.
            assert top["text"] == pairs.captions[i]
            assert torch.equal(decode_png(base64.b64decode(top["image"])), pairs.images[i])
            completion = decode_png(base64.b64decode(body["completion"]["image"]))
            assert ((completion - pairs.images[i]) ** 2).mean() < 1e-4
    assert hits / N >= 0.9, f"paraphrase top-1 {hits}/{N}"


def test_half_picture_finds_its_caption_json_and_multipart(text_memory, pairs):
    known = bottom_half_unknown(64, 64)
    for i in range(0, N, 3):
        cue = pairs.images[i] * known  # the bottom half blacked out, and said so in the mask
        r = text_memory.post("/v1/memories/photos/lookup",
                             json={"image": png_b64(cue), "mask": png_b64(known.float()[None]), "k": 2})
        assert r.status_code == 200, r.json()
        body = r.json()
        assert body["query"] == "image" and body["patterns"] is None
        assert body["captions"][0] == {"id": pairs.ids[i], "text": pairs.captions[i],
                                       "score": pytest.approx(1.0, abs=1e-3)}
        # Multipart, with the unknown half marked by alpha instead of a mask picture.
        r = text_memory.post("/v1/memories/photos/lookup", files={"image": ("c.png", rgba_png(pairs.images[i], known))})
        assert r.status_code == 200 and r.json()["captions"][0]["id"] == pairs.ids[i]
        # Multipart image + mask picture.
        r = text_memory.post("/v1/memories/photos/lookup",
                             files={"image": ("c.png", png(cue)), "mask": ("m.png", mask_png(known))}, data={"k": "1"})
        assert r.status_code == 200 and [c["id"] for c in r.json()["captions"]] == [pairs.ids[i]]


def test_text_memory_recall_and_pattern_endpoints_speak_of_the_picture(text_memory, pairs):
    """Retrieve/complete/get in a text memory work on the picture alone (D entries)."""
    known = bottom_half_unknown(64, 64)
    r = text_memory.post("/v1/memories/photos/complete",
                         files={"image": ("c.png", png(pairs.images[4] * known)), "mask": ("m.png", mask_png(known))})
    assert r.status_code == 200 and r.json()["matches"][0]["id"] == pairs.ids[4]
    got = text_memory.get(f"/v1/memories/photos/patterns/{pairs.ids[4]}", headers={"Accept": "image/png"})
    assert torch.equal(decode_png(got.content), pairs.images[4])
    assert text_memory.get(f"/v1/memories/photos/patterns/{pairs.ids[4]}").json()["text"] == pairs.captions[4]


def test_lookup_survives_a_restart(make_client, tmp_path, pairs):
    client = make_client()
    client.post("/v1/memories", json={"name": "p", "kind": "hopfield", "shape": [3, 64, 64], "text": True})
    client.post("/v1/memories/p/patterns", json={"patterns": [
        {"id": pairs.ids[i], "image": png_b64(pairs.images[i]), "text": pairs.captions[i]} for i in range(6)]})
    make_client.stop(client)
    again = make_client()
    r = again.post("/v1/memories/p/lookup", json={"text": pairs.captions[2], "k": 1})
    assert r.status_code == 200 and r.json()["patterns"][0]["id"] == pairs.ids[2]


def test_vector_text_memory(client):
    client.post("/v1/memories", json={"name": "v", "kind": "hopfield", "shape": [4], "text": True})
    r = client.post("/v1/memories/v/patterns", json={"patterns": [
        {"id": "cat", "vector": [1, 0, 0, 0], "text": "a small cat sleeping on a sofa"},
        {"id": "car", "vector": [0, 0, 1, 1], "text": "a fast red sports car on a road"}]})
    assert r.status_code == 201
    found = client.post("/v1/memories/v/lookup", json={"text": "an automobile driving quickly", "k": 2}).json()
    assert found["query"] == "text" and found["patterns"][0]["id"] == "car"
    assert found["patterns"][0]["vector"] == [0, 0, 1, 1]
    captions = client.post("/v1/memories/v/lookup", json={"vector": [0.9, 0.1, 0, 0], "k": 1}).json()
    assert captions["query"] == "vector" and captions["captions"][0]["id"] == "cat"


def test_lookup_errors(client, text_memory, pairs):
    client.post("/v1/memories", json={"name": "plain", "kind": "hopfield", "shape": [4]})
    r = client.post("/v1/memories/plain/lookup", json={"text": "anything"})
    assert r.status_code == 422 and error_code(r) == "not_a_text_memory"
    r = client.post("/v1/memories/nope/lookup", json={"text": "anything"})
    assert r.status_code == 404 and error_code(r) == "memory_not_found"
    r = client.post("/v1/memories/photos/lookup", json={"text": "   "})
    assert r.status_code == 422 and error_code(r) == "invalid_cue"
    r = client.post("/v1/memories/photos/lookup", json={"text": "a cat", "image": png_b64(pairs.images[0])})
    assert r.status_code == 422 and error_code(r) == "invalid_cue"
    r = client.post("/v1/memories/photos/lookup", json={"text": "a cat", "k": 10_000})
    assert r.status_code == 422 and error_code(r) == "k_too_large"
    r = client.post("/v1/memories/photos/lookup", json={})
    assert r.status_code == 422 and error_code(r) == "invalid_cue"
    r = client.post("/v1/memories/photos/lookup", files={"image": ("x.png", b"not a picture")})
    assert r.status_code == 422 and error_code(r) == "invalid_image"
    # A text memory needs a caption with every pattern, and stores nothing otherwise.
    before = client.get("/v1/memories/photos").json()["count"]
    r = client.post("/v1/memories/photos/patterns", json={"patterns": [
        {"id": "x1", "image": png_b64(pairs.images[30]), "text": "a caption"},
        {"id": "x2", "image": png_b64(pairs.images[31])}]})
    assert r.status_code == 422 and error_code(r) == "text_required"
    assert client.get("/v1/memories/photos").json()["count"] == before
    empty = client.post("/v1/memories", json={"name": "empty", "kind": "hopfield", "shape": [4], "text": True})
    assert empty.status_code == 201
    r = client.post("/v1/memories/empty/lookup", json={"text": "a cat"})
    assert r.status_code == 409 and error_code(r) == "memory_empty"


def test_pc_text_memory_looks_up_both_ways(make_client):
    """Kind pc with captions: trained through the API, then a reworded caption finds its
    photo (ranked by the stored captions), the network's completion from an exact caption
    is that photo, and a half photo's completed caption part names its caption."""
    pairs32 = photo_caption_pairs(32)
    n = 12
    client = make_client()
    created = client.post("/v1/memories", json={"name": "pcp", "kind": "pc", "shape": [3, 32, 32], "text": True,
                                                "config": {"sizes": [64, 256, 3 * 32 * 32 + 384], "epochs": 100}})
    assert created.status_code == 201, created.json()
    stored = client.post("/v1/memories/pcp/patterns", json={"patterns": [
        {"id": pairs32.ids[i], "image": png_b64(pairs32.images[i]), "text": pairs32.captions[i]} for i in range(n)]})
    assert stored.status_code == 201, stored.json()
    r = client.post("/v1/memories/pcp/lookup", json={"text": pairs32.captions[0]})
    assert r.status_code == 409 and error_code(r) == "not_trained"
    job = wait_job(client, client.post("/v1/memories/pcp/train", json={}).json()["id"], timeout=300)
    assert job["status"] == "succeeded", job

    para_hits = completion_hits = caption_hits = 0
    known = bottom_half_unknown(32, 32)
    for i in range(n):
        found = client.post("/v1/memories/pcp/lookup", json={"text": pairs32.paraphrases[i], "k": 2}).json()
        assert found["state"] == "ready" and found["trained_count"] == n
        para_hits += found["patterns"][0]["id"] == pairs32.ids[i]
        exact = client.post("/v1/memories/pcp/lookup", json={"text": pairs32.captions[i], "k": 1}).json()
        picture = decode_png(base64.b64decode(exact["completion"]["image"]))  # (3, 32, 32)
        distances = ((pairs32.images[:n] - picture[None]) ** 2).flatten(1).mean(1)  # (n,)
        completion_hits += int(distances.argmin()) == i
        half = client.post("/v1/memories/pcp/lookup", files={"image": ("c.png", rgba_png(pairs32.images[i], known))})
        assert half.status_code == 200, half.json()
        caption_hits += half.json()["captions"][0]["id"] == pairs32.ids[i]
    assert para_hits >= n - 1, para_hits
    assert completion_hits >= n - 1, completion_hits
    assert caption_hits >= n - 1, caption_hits
